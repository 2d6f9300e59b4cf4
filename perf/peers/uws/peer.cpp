// peer-uws: the shared peer semantics (perf/peers/README.md) on uWebSockets.
//
//   peer-uws PORT    # 0 or nothing: any free port
//
// One event loop on one thread, no TLS, no compression. /echo sends every
// message back with its opcode; /room/<name> subscribes the connection to
// topic <name>, and each message is published to that topic with
// `WebSocket::publish`, which skips the publishing subscriber (TopicTree's
// `sender != s`), so it never comes back to its sender. Any other path, or
// a room name outside [A-Za-z0-9._:-]+, gets a 404. uWS routes on the path
// without the query string.

#include "App.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <unistd.h>

namespace {

// Messages up to this size are accepted (the bench sends at most 64 KiB).
constexpr unsigned int kMaxPayload = 16 * 1024 * 1024;

struct Member {
    // Empty on /echo connections.
    std::string room;
};

bool valid_room(std::string_view name) {
    if (name.empty()) return false;
    for (char c : name) {
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok) return false;
    }
    return true;
}

// Settings shared by both routes. maxBackpressure 0 turns uWS's per-socket
// drop check off (it is `maxBackpressure && maxBackpressure < buffered`), so
// like every other peer a slow reader queues without bound and nothing is
// dropped. idleTimeout 0: no idle timer and no automatic pings, as elsewhere.
uWS::App::WebSocketBehavior<Member> behavior() {
    uWS::App::WebSocketBehavior<Member> b;
    b.compression = uWS::DISABLED;
    b.maxPayloadLength = kMaxPayload;
    b.idleTimeout = 0;
    b.maxBackpressure = 0;
    b.closeOnBackpressureLimit = false;
    b.sendPingsAutomatically = false;
    return b;
}

void refuse(uWS::HttpResponse<false> *res) {
    res->writeStatus("404 Not Found")->end("not found\n");
}

void exit_now(int) { _exit(0); }

}  // namespace

int main(int argc, char **argv) {
    int port = argc > 1 ? std::atoi(argv[1]) : 0;
    std::signal(SIGTERM, exit_now);
    std::signal(SIGINT, exit_now);
    std::signal(SIGPIPE, SIG_IGN);

    auto echo = behavior();
    echo.message = [](auto *ws, std::string_view message, uWS::OpCode op) { ws->send(message, op); };

    auto room = behavior();
    room.upgrade = [](auto *res, auto *req, auto *context) {
        std::string_view name = req->getParameter(0);
        if (!valid_room(name)) {
            refuse(res);
            return;
        }
        res->template upgrade<Member>({std::string(name)}, req->getHeader("sec-websocket-key"),
                                      req->getHeader("sec-websocket-protocol"),
                                      req->getHeader("sec-websocket-extensions"), context);
    };
    room.open = [](auto *ws) { ws->subscribe(ws->getUserData()->room); };
    room.message = [](auto *ws, std::string_view message, uWS::OpCode op) {
        ws->publish(ws->getUserData()->room, message, op);
    };

    uWS::App()
        .ws<Member>("/echo", std::move(echo))
        .ws<Member>("/room/:name", std::move(room))
        .any("/*", [](auto *res, auto *) { refuse(res); })
        .listen("127.0.0.1", port,
                [](us_listen_socket_t *ls) {
                    if (!ls) {
                        std::fprintf(stderr, "cannot listen\n");
                        std::exit(1);
                    }
                    std::printf("listening on 127.0.0.1:%d\n",
                                us_socket_local_port(0, (us_socket_t *)ls));
                    std::fflush(stdout);
                })
        .run();
    return 0;
}
