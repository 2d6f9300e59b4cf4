use super::*;
use crate::codes::ErrorCode;

fn call(method: Method, body: &str) -> Result<Call, ApiError> {
    parse(
        method,
        &mut body.as_bytes().to_vec(),
        &mut Parser::default(),
    )
}

fn one(method: Method, body: &str) -> Result<Command, ApiError> {
    call(method, body).and_then(|c| c.commands.into_iter().next().unwrap())
}

fn code(result: Result<Command, ApiError>) -> ErrorCode {
    result.unwrap_err().code
}

#[test]
fn methods_are_named_as_in_the_protocol() {
    for method in Method::ALL {
        assert_eq!(Method::named(method.name()), Some(method));
    }
    assert_eq!(Method::named("Publish"), None);
    assert_eq!(Method::named("channels"), None);
}

#[test]
fn disconnect_defaults_and_bounds() {
    assert_eq!(
        one(Method::Disconnect, r#"{"user":"u"}"#),
        Ok(Command::Node(NodeCommand::Disconnect {
            user: "u".into(),
            conn_id: None,
            code: 4500,
            reason: "disconnected".into(),
        }))
    );
    let ok = one(
        Method::Disconnect,
        &format!(
            r#"{{"user":"u","code":4000,"reason":"{}","connId":"c"}}"#,
            "r".repeat(120)
        ),
    );
    assert!(ok.is_ok(), "{ok:?}");
    for bad in [
        r#"{"user":"u","code":3999}"#,
        r#"{"user":"u","code":5000}"#,
        r#"{"user":"u","code":4500.5}"#,
        r#"{"user":"u","code":"4500"}"#,
        r#"{"user":""}"#,
        r#"{"user":7}"#,
        r#"{}"#,
        r#"{"user":"u","connId":1}"#,
    ] {
        assert_eq!(
            code(one(Method::Disconnect, bad)),
            ErrorCode::ValidationError,
            "{bad}"
        );
    }
    let long = format!(r#"{{"user":"u","reason":"{}"}}"#, "r".repeat(121));
    assert_eq!(
        code(one(Method::Disconnect, &long)),
        ErrorCode::ValidationError
    );
}

#[test]
fn bodies_that_are_not_objects_are_invalid_messages() {
    for bad in ["[]", "1", "\"x\"", "{", "nul", &"[".repeat(10_000)] {
        assert_eq!(
            code(one(Method::Info, bad)),
            ErrorCode::InvalidMessage,
            "{bad:.20}"
        );
    }
    assert_eq!(one(Method::Info, ""), Ok(Command::Node(NodeCommand::Info)));
    assert_eq!(
        one(Method::Info, " {} "),
        Ok(Command::Node(NodeCommand::Info))
    );
}

#[test]
fn rooms_take_only_section_2_patterns() {
    assert_eq!(
        one(Method::Rooms, r#"{"pattern":"prices:*"}"#),
        Ok(Command::Node(NodeCommand::Rooms {
            pattern: Some("prices:*".into())
        }))
    );
    for bad in [
        r#"{"pattern":"a*b"}"#,
        r#"{"pattern":""}"#,
        r#"{"pattern":["*"]}"#,
    ] {
        assert_eq!(
            code(one(Method::Rooms, bad)),
            ErrorCode::ValidationError,
            "{bad}"
        );
    }
}

#[test]
fn history_reads_like_a_join() {
    assert_eq!(
        one(
            Method::History,
            r#"{"room":"r","limit":5,"since":3,"epoch":"e1"}"#
        ),
        Ok(Command::History {
            room: "r".into(),
            query: HistoryQuery {
                limit: Some(5),
                since: Some(3),
                epoch: Some("e1".into()),
            }
        })
    );
    assert_eq!(
        code(one(Method::History, r#"{"room":"r","limit":-1}"#)),
        ErrorCode::ValidationError
    );
    assert_eq!(
        code(one(Method::History, r#"{"room":"bad room"}"#)),
        ErrorCode::ValidationError
    );
}

#[test]
fn broadcast_keeps_bad_rooms_as_their_own_errors() {
    let Ok(Command::Broadcast {
        rooms, event, data, ..
    }) = one(
        Method::Broadcast,
        r#"{"rooms":["a","bad room","b"],"event":"x:y","data":{"k" : "\u00e9"}}"#,
    )
    else {
        panic!("a broadcast")
    };
    assert_eq!(rooms.len(), 3);
    assert!(rooms[0].is_ok() && rooms[1].is_err() && rooms[2].is_ok());
    assert_eq!(&*event, "x:y");
    assert_eq!(&*data, br#"{"k" : "\u00e9"}"#);
    let many = format!(
        r#"{{"rooms":[{}],"event":"x:y"}}"#,
        vec!["\"r\""; 1001].join(",")
    );
    assert_eq!(
        code(one(Method::Broadcast, &many)),
        ErrorCode::ValidationError
    );
    assert_eq!(
        code(one(Method::Broadcast, r#"{"rooms":[],"event":"x:y"}"#)),
        ErrorCode::ValidationError
    );
    assert_eq!(
        code(one(
            Method::Broadcast,
            r#"{"rooms":["a"],"event":"room:x"}"#
        )),
        ErrorCode::ValidationError
    );
}

#[test]
fn publish_takes_the_publish_body_without_patterns() {
    let Ok(Command::Publish(messages)) = one(
        Method::Publish,
        r#"{"messages":[{"room":"a","event":"x:y","data":1},{"room":"b","event":"x:y"}]}"#,
    ) else {
        panic!("a publish")
    };
    assert_eq!(messages.len(), 2);
    assert_eq!(
        code(one(Method::Publish, r#"{"room":"a"}"#)),
        ErrorCode::ValidationError
    );
}

#[test]
fn a_batch_runs_each_command_with_its_own_outcome() {
    let body = r#"{"commands":[
        {"method":"info"},
        {"method":"nope","params":{}},
        {"method":"subscribe","params":{"user":"u","room":"r"}},
        {"method":"subscribe","params":{"user":"u"}},
        {"method":"batch","params":{"commands":[]}}
    ]}"#;
    let call = call(Method::Batch, body).unwrap();
    assert!(call.batch);
    let codes: Vec<_> = call
        .commands
        .iter()
        .map(|c| c.as_ref().err().map(|e| e.code))
        .collect();
    assert_eq!(
        codes,
        [
            None,
            Some(ErrorCode::NotFound),
            None,
            Some(ErrorCode::ValidationError),
            Some(ErrorCode::ValidationError)
        ]
    );
}

#[test]
fn a_batch_is_bounded_and_shaped() {
    let many = format!(
        r#"{{"commands":[{}]}}"#,
        vec![r#"{"method":"info"}"#; 101].join(",")
    );
    assert_eq!(
        call(Method::Batch, &many).unwrap_err().code,
        ErrorCode::ValidationError
    );
    let hundred = format!(
        r#"{{"commands":[{}]}}"#,
        vec![r#"{"method":"info"}"#; 100].join(",")
    );
    assert_eq!(call(Method::Batch, &hundred).unwrap().commands.len(), 100);
    for bad in [
        r#"{}"#,
        r#"{"commands":{}}"#,
        r#"{"commands":[1]}"#,
        r#"{"commands":[{"method":1}]}"#,
        r#"{"commands":[{"method":"info","params":[]}]}"#,
    ] {
        assert_eq!(
            call(Method::Batch, bad).unwrap_err().code,
            ErrorCode::ValidationError,
            "{bad}"
        );
    }
    assert_eq!(
        call(Method::Batch, "[]").unwrap_err().code,
        ErrorCode::InvalidMessage
    );
}

proptest::proptest! {
    #[test]
    fn any_body_gets_an_answer_not_a_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
        for method in Method::ALL {
            let _ = parse(method, &mut body.clone(), &mut Parser::default());
        }
    }
}
