//! The fuzz engine: replays a target's corpus, then mutates corpus entries
//! and generates structure-aware inputs until the time budget runs out.
//!
//! Stable Rust has no libFuzzer, so there is no coverage feedback: the
//! engine relies on the targets' generators (valid inputs with one field
//! broken) and on mutations that know what parsers trip over (length
//! fields, CRLFs, quotes, dictionary tokens). A failing input is printed in
//! hex and saved so that it can join the corpus.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// One parser under fuzzing.
pub struct Target {
    /// Also the corpus directory's name.
    pub name: &'static str,
    /// Runs the parser on one input and asserts its oracles; a panic (from
    /// the parser or an assertion) is a finding. Must be deterministic in
    /// the input alone, so that a saved input reproduces the finding.
    pub check: fn(&[u8]),
    /// A structure-aware input: valid, or valid with one field broken.
    pub generate: fn(&mut Rng) -> Vec<u8>,
    /// Byte strings that mean something to the parser, spliced in by mutations.
    pub dictionary: &'static [&'static [u8]],
    /// Inputs are cut to this length (no parser gains from more).
    pub max_len: usize,
}

/// A small, fast, seedable generator (SplitMix64); not for secrets.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// A generator seeded by the input's bytes, for the choices a check
    /// makes (split points, limits): a saved input reproduces them.
    pub fn from_input(input: &[u8]) -> Self {
        Rng(fnv1a(input))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// True once in `n` times.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A copy of one of `items`.
    pub fn choose<T: Copy>(&mut self, items: &[T]) -> T {
        *self.pick(items)
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }

    /// Sorted cut points in `0..=len` ending with `len`: how a stream might
    /// arrive over several reads.
    pub fn cuts(&mut self, len: usize) -> Vec<usize> {
        let mut cuts: Vec<usize> = (0..self.below(6)).map(|_| self.below(len + 1)).collect();
        if self.one_in(4) {
            cuts = (0..len).collect(); // Byte by byte.
        }
        cuts.sort_unstable();
        cuts.push(len);
        cuts
    }
}

pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Runs `target` for the configured budget and panics with a report on the
/// first finding.
pub fn run(target: &Target) {
    let config = Config::from_env();
    if config.write_seeds > 0 {
        write_seeds(target, config.seed, config.write_seeds);
    }
    let corpus = load_corpus(target.name);
    for (path, input) in &corpus {
        if let Err(message) = attempt(target, input) {
            panic!(
                "fuzz {}: corpus file {} fails: {message}",
                target.name,
                path.display()
            );
        }
    }
    let seed = config.seed ^ fnv1a(target.name.as_bytes());
    let mut rng = Rng::new(seed);
    let pool: Vec<Vec<u8>> = corpus.into_iter().map(|(_, input)| input).collect();
    let started = Instant::now();
    let mut executions = 0u64;
    while started.elapsed() < config.budget {
        let input = next_input(target, &mut rng, &pool);
        executions += 1;
        if let Err(message) = attempt(target, &input) {
            report(target, config.seed, executions, &input, &message);
        }
    }
    println!(
        "fuzz {}: {} corpus files, {executions} executions in {:.1} s (seed {})",
        target.name,
        pool.len(),
        started.elapsed().as_secs_f64(),
        config.seed
    );
}

/// What the environment asks for.
struct Config {
    budget: Duration,
    seed: u64,
    /// `ROOMCAST_FUZZ_WRITE_SEEDS`: generated inputs to add to the corpus.
    write_seeds: usize,
}

impl Config {
    fn from_env() -> Self {
        let secs = std::env::var("ROOMCAST_FUZZ_SECS")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(2.0);
        let seed = std::env::var("ROOMCAST_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(time_seed);
        let write_seeds = std::env::var("ROOMCAST_FUZZ_WRITE_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Config {
            budget: Duration::from_secs_f64(secs.max(0.0)),
            seed,
            write_seeds,
        }
    }
}

fn time_seed() -> u64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_nanos() as u64
}

/// A quarter fresh from the generator, a quarter generated then mutated,
/// half mutated from the corpus.
fn next_input(target: &Target, rng: &mut Rng, pool: &[Vec<u8>]) -> Vec<u8> {
    let mut input = match rng.below(4) {
        0 => (target.generate)(rng),
        1 => {
            let fresh = (target.generate)(rng);
            mutate(rng, fresh, pool, target.dictionary)
        }
        _ if pool.is_empty() => (target.generate)(rng),
        _ => {
            let entry = rng.pick(pool).clone();
            mutate(rng, entry, pool, target.dictionary)
        }
    };
    input.truncate(target.max_len);
    input
}

/// Runs the check, turning a panic into its message.
fn attempt(target: &Target, input: &[u8]) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| (target.check)(input))).map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic without a message".to_owned())
    })
}

fn report(target: &Target, seed: u64, execution: u64, input: &[u8], message: &str) -> ! {
    let saved = save_finding(target.name, input);
    panic!(
        "fuzz {}: finding at execution {execution} (ROOMCAST_FUZZ_SEED={seed}): {message}\n\
         input ({} bytes): {}\nsaved as {} (move it into tests/fuzz/corpus/{}/ once fixed)",
        target.name,
        input.len(),
        hex(input),
        saved.display(),
        target.name
    );
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(name)
}

fn load_corpus(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(corpus_dir(name)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    files.sort();
    files
        .into_iter()
        .filter(|path| path.is_file())
        .map(|path| {
            let bytes = std::fs::read(&path).expect("corpus file is readable");
            (path, bytes)
        })
        .collect()
}

/// Adds `count` generator outputs to the target's corpus, named by hash.
fn write_seeds(target: &Target, seed: u64, count: usize) {
    let dir = corpus_dir(target.name);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    let mut rng = Rng::new(seed ^ fnv1a(target.name.as_bytes()));
    for _ in 0..count {
        let mut input = (target.generate)(&mut rng);
        input.truncate(target.max_len);
        let path = dir.join(format!("gen-{:016x}", fnv1a(&input)));
        std::fs::write(&path, &input).expect("corpus file written");
    }
}

/// Writes a finding under the target directory, named by its hash.
fn save_finding(name: &str, input: &[u8]) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("fuzz-found").join(name);
    let path = dir.join(format!("{:016x}", fnv1a(input)));
    if std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, input))
        .is_err()
    {
        eprintln!(
            "fuzz {name}: could not save the finding to {}",
            path.display()
        );
    }
    path
}

/// Bytes that parsers treat specially.
const INTERESTING_BYTES: &[u8] = &[
    0, 1, 0x7e, 0x7f, 0x80, 0xc0, 0xed, 0xf4, 0xff, b'\r', b'\n', b' ', b'\t', b'"', b'\\', b':',
    b',', b';', b'.', b'=', b'{', b'}', b'[', b']', b'0', b'9', b'-', b'*', b'$',
];

/// Numbers around the bounds parsers check.
const INTERESTING_NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "-2",
    "7",
    "125",
    "126",
    "127",
    "255",
    "256",
    "1023",
    "1024",
    "4096",
    "65535",
    "65536",
    "8192",
    "1000",
    "1001",
    "2147483648",
    "4294967295",
    "4294967296",
    "9007199254740991",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "99999999999999999999999",
    "1e400",
    "-0",
    "0x10",
    "+5",
    "1.5",
    "fff",
    "FFFFFFFFFFFFFFFF",
];

/// Applies one to four random mutations.
pub fn mutate(rng: &mut Rng, mut input: Vec<u8>, pool: &[Vec<u8>], dict: &[&[u8]]) -> Vec<u8> {
    for _ in 0..=rng.below(4) {
        mutate_once(rng, &mut input, pool, dict);
    }
    input
}

fn mutate_once(rng: &mut Rng, input: &mut Vec<u8>, pool: &[Vec<u8>], dict: &[&[u8]]) {
    let len = input.len();
    match rng.below(11) {
        0 if len > 0 => {
            let at = rng.below(len);
            input[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = rng.below(len);
            input[at] = rng.choose(INTERESTING_BYTES);
        }
        2 if len > 0 => {
            // Length fields and opcodes: small steps up or down.
            let at = rng.below(len);
            let delta = rng.choose(&[1u8, 2, 16, 0x80, 0xff, 0xfe]);
            input[at] = input[at].wrapping_add(delta);
        }
        3 => {
            let count = 1 + rng.below(8);
            let fresh = rng.bytes(count);
            splice_in(input, rng.below(len + 1), &fresh);
        }
        4 if len > 0 => {
            let start = rng.below(len);
            let end = start + 1 + rng.below((len - start).min(32));
            input.drain(start..end);
        }
        5 if len > 0 => {
            let start = rng.below(len);
            let end = start + 1 + rng.below((len - start).min(64));
            let chunk = input[start..end].to_vec();
            splice_in(input, rng.below(len + 1), &chunk);
        }
        6 if !pool.is_empty() => {
            // Keep a prefix of this input and a suffix of another.
            let other = rng.pick(pool);
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
        }
        7 => input.truncate(rng.below(len + 1)),
        8 if !dict.is_empty() => {
            let token = rng.choose(dict);
            splice_in(input, rng.below(len + 1), token);
        }
        9 => replace_number(rng, input),
        _ => {
            // Repeat one byte many times: long lines, deep nesting.
            if len > 0 {
                let byte = input[rng.below(len)];
                let run = vec![byte; 1 + rng.below(200)];
                splice_in(input, rng.below(len + 1), &run);
            }
        }
    }
}

fn splice_in(input: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    input.splice(at..at, bytes.iter().copied());
}

/// Replaces a run of ASCII digits (a length, a size, an integer) with a
/// number near a bound; inserts one when there is none.
fn replace_number(rng: &mut Rng, input: &mut Vec<u8>) {
    let number = rng.pick(INTERESTING_NUMBERS).as_bytes();
    let starts: Vec<usize> = (0..input.len())
        .filter(|&i| input[i].is_ascii_digit() && (i == 0 || !input[i - 1].is_ascii_digit()))
        .collect();
    if starts.is_empty() {
        splice_in(input, rng.below(input.len() + 1), number);
        return;
    }
    let start = rng.choose(&starts);
    let end = (start..input.len())
        .find(|&i| !input[i].is_ascii_digit())
        .unwrap_or(input.len());
    input.splice(start..end, number.iter().copied());
}
