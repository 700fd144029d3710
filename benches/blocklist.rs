//! Block-list lookups: the index against a naive linear scan that computes the edit distance to
//! every entry, over 100,000 generated entries, plus the time to build the index; then graded
//! verdicts on realistic handles.
//!
//! `cargo bench --bench blocklist` runs criterion, then prints one summary line with medians of
//! its own (2,000 timed index lookups, 21 timed scans, 3 builds). `KNOCK_BENCH_JSON=<path>` also
//! writes those figures as JSON; `KNOCK_BENCH_QUICK=1` or `-- --test` uses 5,000 entries, and
//! `KNOCK_BENCH_ENTRIES=<n>` any other number.
//!
//! Realistic handles (see `support/handles.rs`): 100 and 1,000 blocked handles among a list
//! filled up to the same number of entries, 2,000 honest handles of the same kinds, and evasions
//! of every blocked handle by each technique; for the in-sample split (what the policy was tuned
//! on), the first two held-out splits, now seen (`held_out_seen`, `held_out_seen_2`), and the
//! fresh held-out one (`fresh_held_out`, measured once; see `support/handles.rs`). The filler is,
//! in turn, the generated entries above (`synthetic`),
//! a list shaped like a shared ban list matched fuzzily (`ban_list_fuzzy`), and the same list
//! matched as a subscribed one, exactly and by glob (`ban_list_exact`); see [`Filler`].
//! Prints the confusion table by technique and by outcome, which entry caught each honest
//! handle and by which rule, and adds a `realistic` object to the JSON. `KNOCK_BENCH_MISSES=1`
//! also prints the evasions let in and the honest handles blocked or held (apart from same-family
//! namesakes); `KNOCK_BENCH_ONLY=realistic` runs only this part; `KNOCK_BENCH_FILLER` and
//! `KNOCK_BENCH_SPLIT` (comma-separated names: `in_sample`, `held_out_seen`, `held_out_seen_2`,
//! `fresh_held_out`)
//! pick fillers and splits; `BLOCKLIST_*` settings
//! apply as in the worker.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, SamplingMode};
use knock::domain::blocklist::{
    allowed_distance, family_key, osa_distance, BlockIndex, Entry, EntryKind, LinearScan,
};
use knock::domain::blocklist::{commonness, Outcome, Policy, Reach};
use knock::domain::mxid::UserId;

#[path = "support/handles.rs"]
mod handles;

const FIRST: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "oscar", "peggy", "trent", "victor", "walter", "anna", "maria", "lukas", "jonas", "sofia",
    "emma", "noah", "liam", "olivia", "mateo", "chloe", "yuki", "hiro", "wei", "priya", "arjun",
    "fatima", "omar", "lena", "nina", "pavel", "olga", "dmitri", "sven", "ingrid", "kofi", "amara",
];
const LAST: &[&str] = &[
    "smith", "jones", "garcia", "miller", "davis", "martin", "lopez", "wilson", "anderson",
    "taylor", "thomas", "moore", "jackson", "white", "harris", "clark", "lewis", "walker", "young",
    "king", "wright", "scott", "green", "baker", "adams", "nelson", "hill", "campbell", "mitchell",
    "schmidt", "muller", "novak", "kowalski", "tanaka", "suzuki", "chen", "wang", "kumar", "singh",
];
const WORDS: &[&str] = &[
    "crypto", "gamer", "dragon", "shadow", "ninja", "pixel", "cyber", "troll", "spam", "bot",
    "wolf", "storm", "night", "fire", "ghost", "dark", "king", "queen", "hunter", "rider", "star",
    "moon", "sun", "rock", "metal", "code", "hack", "byte", "neo", "zero", "alpha", "omega",
    "panda", "tiger", "eagle", "falcon", "viper", "cobra", "raven", "blaze",
];
const SERVERS: &[&str] = &[
    "matrix.org",
    "example.com",
    "kde.org",
    "mozilla.org",
    "tchncs.de",
    "envs.net",
    "nitro.chat",
    "converser.eu",
    "matrix.im",
    "fosdem.org",
    "gnome.org",
    "synapse.example.net",
    "hs.lan",
    "chat.university.edu",
    "m.company.io",
    "localhost",
    "beeper.com",
    "element.io",
    "t2bot.io",
    "halogen.city",
    "feneas.org",
    "pikaviestin.fi",
    "matrix.cat",
    "ru-matrix.org",
    "tedomum.net",
];
const SEPARATORS: &[&str] = &["", "", "", "_", ".", "-", "="];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn digits(&mut self, max: usize) -> String {
        let n = self.below(max + 1);
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }
}

const ONSETS: &[&str] = &[
    "b", "br", "ch", "d", "f", "g", "gr", "h", "j", "k", "kr", "l", "m", "n", "p", "r", "s", "sh",
    "st", "t", "tr", "v", "w", "z",
];
const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ou", "y"];

fn invented(rng: &mut Rng) -> String {
    let syllables = 2 + rng.below(3);
    (0..syllables)
        .map(|_| format!("{}{}", rng.pick(ONSETS), rng.pick(VOWELS)))
        .collect()
}

fn localpart(rng: &mut Rng) -> String {
    let sep = rng.pick(SEPARATORS);
    match rng.below(12) {
        7 | 8 => invented(rng),
        9 => format!("{}{sep}{}", invented(rng), rng.pick(LAST)),
        10 => format!("{}{sep}{}{}", rng.pick(FIRST), invented(rng), rng.digits(2)),
        11 => format!("{}{}", invented(rng), rng.digits(4)),
        0 => format!("{}{sep}{}", rng.pick(FIRST), rng.pick(LAST)),
        1 => format!(
            "{}{sep}{}{}",
            rng.pick(FIRST),
            rng.pick(LAST),
            rng.digits(4)
        ),
        2 => format!(
            "{}{sep}{}{}",
            rng.pick(WORDS),
            rng.pick(WORDS),
            rng.digits(3)
        ),
        3 => format!("{}{}", rng.pick(FIRST), rng.digits(4)),
        4 => format!("{}{sep}{}", rng.pick(WORDS), rng.pick(FIRST)),
        5 => format!("x{}x{}", rng.pick(WORDS), rng.digits(2)),
        _ => format!(
            "{}{}{sep}{}",
            rng.pick(FIRST),
            rng.pick(LAST),
            rng.pick(WORDS)
        ),
    }
}

fn generate(n: usize, rng: &mut Rng) -> Vec<Entry> {
    let mut entries = Vec::with_capacity(n);
    while entries.len() < n {
        let roll = rng.below(1000);
        let text = if roll < 10 {
            format!("@{}*:*", rng.pick(WORDS))
        } else if roll < 15 {
            format!("*:{}{}.example", rng.pick(WORDS), rng.digits(3))
        } else if roll < 20 {
            format!("@{}?{}:*", rng.pick(FIRST), rng.digits(2))
        } else {
            format!("@{}:{}", localpart(rng), rng.pick(SERVERS))
        };
        let entry = if roll >= 995 {
            let name = format!(
                "{} {}",
                capitalise(rng.pick(FIRST)),
                capitalise(rng.pick(LAST))
            );
            Entry::display_name(&name, None, 0)
        } else {
            Entry::parse(&text, Some("ban evasion".into()), 1_700_000_000_000)
        };
        if let Ok(e) = entry {
            entries.push(e);
        }
    }
    entries
}

const SPAM_PREFIXES: &[&str] = &[
    "airdrop",
    "giveaway",
    "freenitro",
    "cryptobot",
    "spambot",
    "casino",
    "promocode",
    "nftdrop",
    "bitcoinx",
    "forexpro",
    "onlyfans",
    "telegram",
];
const TLDS: &[&str] = &[
    "example", "xyz", "top", "click", "ru", "online", "site", "chat",
];

/// A localpart as spam registrations make them: random letters and digits, hex, or a spam word
/// with a number.
fn bot_localpart(rng: &mut Rng) -> String {
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    match rng.below(4) {
        0 | 1 => (0..8 + rng.below(9))
            .map(|_| char::from(ALNUM[rng.below(ALNUM.len())]))
            .collect(),
        2 => (0..12 + rng.below(8))
            .map(|_| char::from(b"0123456789abcdef"[rng.below(16)]))
            .collect(),
        _ => {
            let word = rng.pick(SPAM_PREFIXES);
            let sep = rng.pick(SEPARATORS);
            format!("{word}{sep}{}{}", rng.below(10), rng.digits(4))
        }
    }
}

fn spam_host(rng: &mut Rng) -> String {
    format!("{}{}.{}", invented(rng), rng.digits(2), rng.pick(TLDS))
}

/// A list shaped like a shared Matrix ban list (a community policy list): mostly spam and bot
/// accounts, then server bans and glob rules, and a minority of banned people.
///
/// - 55 %: bot accounts with generated localparts (random letters and digits, hex, a spam word
///   and a number);
/// - 15 %: bot accounts with invented, name-like localparts and a long number (`brouvaki48213`);
/// - 12 %: server bans (`*:host.example`, `@*:host.example`, `*:*.host.example`);
/// - 3 %: glob rules of spam waves (`@airdrop*:*`);
/// - 15 %: banned people, with handles of the shapes `localpart` makes (the small name lists
///   above, never the realistic generator's names).
fn policy_list(n: usize, rng: &mut Rng) -> Vec<Entry> {
    let mut entries = Vec::with_capacity(n);
    while entries.len() < n {
        let roll = rng.below(100);
        let text = if roll < 55 {
            format!("@{}:{}", bot_localpart(rng), rng.pick(SERVERS))
        } else if roll < 70 {
            let sep = rng.pick(SEPARATORS);
            format!(
                "@{}{sep}{}{}:{}",
                invented(rng),
                1 + rng.below(9),
                rng.digits(4),
                rng.pick(SERVERS)
            )
        } else if roll < 82 {
            match rng.below(3) {
                0 => format!("*:{}", spam_host(rng)),
                1 => format!("@*:{}", spam_host(rng)),
                _ => format!("*:*.{}", spam_host(rng)),
            }
        } else if roll < 85 {
            format!("@{}*:*", rng.pick(SPAM_PREFIXES))
        } else {
            format!("@{}:{}", localpart(rng), rng.pick(SERVERS))
        };
        if let Ok(e) = Entry::parse(&text, Some("spam".into()), 1_700_000_000_000) {
            entries.push(e);
        }
    }
    entries
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

fn disguise(local: &str, rng: &mut Rng) -> String {
    let mut out = String::new();
    for c in local.chars() {
        let leet = match c {
            'o' => '0',
            'i' | 'l' => '1',
            'e' => '3',
            'a' => '4',
            _ => c,
        };
        out.push(if rng.below(3) == 0 { leet } else { c });
        if rng.below(6) == 0 {
            out.push('.');
        }
    }
    out + &rng.digits(3)
}

fn typo(local: &str, rng: &mut Rng) -> String {
    let mut chars: Vec<char> = local.chars().collect();
    if chars.len() > 2 {
        let at = rng.below(chars.len());
        match rng.below(3) {
            0 => {
                chars.remove(at);
            }
            1 => chars.insert(at, 'x'),
            _ => chars[at] = 'q',
        }
    }
    chars.into_iter().collect()
}

/// A third variants of blocked IDs, a third typos of them, a third fresh names (mostly misses).
fn queries(entries: &[Entry], n: usize, rng: &mut Rng) -> Vec<UserId> {
    let ids: Vec<&str> = entries
        .iter()
        .filter(|e| e.pattern.starts_with('@') && !e.pattern.contains(['*', '?']))
        .map(|e| e.pattern.as_str())
        .collect();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let blocked = ids[rng.below(ids.len())];
        let local = &blocked[1..blocked.find(':').unwrap_or(1)];
        let candidate = match out.len() % 3 {
            0 => disguise(local, rng),
            1 => typo(local, rng),
            _ => localpart(rng),
        };
        if let Ok(id) = UserId::parse(&format!("@{candidate}:{}", rng.pick(SERVERS))) {
            out.push(id);
        }
    }
    out
}

/// The issue's baseline: no index at all; the edit distance from the candidate's family key to
/// every entry's (the entries' keys are normalised once, up front), keeping the closest.
struct NaiveScan {
    keys: Vec<Vec<char>>,
}

impl NaiveScan {
    fn new(entries: &[Entry]) -> NaiveScan {
        let keys = entries
            .iter()
            .filter(|e| e.kind == EntryKind::UserId)
            .filter_map(|e| UserId::parse(&e.pattern).ok())
            .map(|u| family_key(u.localpart()).chars().collect())
            .collect();
        NaiveScan { keys }
    }

    fn check_user(&self, user: &UserId) -> bool {
        let candidate: Vec<char> = family_key(user.localpart()).chars().collect();
        let closest = self
            .keys
            .iter()
            .map(|k| osa_distance(&candidate, k))
            .min()
            .unwrap_or(usize::MAX);
        closest <= allowed_distance(candidate.len())
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn main() {
    let quick =
        std::env::var_os("KNOCK_BENCH_QUICK").is_some() || std::env::args().any(|a| a == "--test");
    let n = std::env::var("KNOCK_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 5_000 } else { 100_000 });
    if std::env::var("KNOCK_BENCH_ONLY").is_ok_and(|v| v == "realistic") {
        let realistic = realistic(n, &mut Rng(0x9e37_79b9_7f4a_7c15));
        if let Some(path) = std::env::var_os("KNOCK_BENCH_JSON") {
            let json = format!("{{\"entries\":{n},\"realistic\":{realistic}}}\n");
            if let Err(e) = std::fs::write(&path, json) {
                eprintln!("blocklist: cannot write {}: {e}", path.to_string_lossy());
            }
        }
        return;
    }
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let entries = generate(n, &mut rng);
    let lookups = queries(&entries, 2_000, &mut rng);
    let index = BlockIndex::build(entries.clone());
    let scan = LinearScan::new(&entries);
    let naive = NaiveScan::new(&entries);

    let mut criterion = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let mut group = criterion.benchmark_group("blocklist");
    let mut next = 0;
    group.bench_function("index_check_user", |b| {
        b.iter(|| {
            next = (next + 1) % lookups.len();
            black_box(index.check_user(&lookups[next]).is_some())
        })
    });
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group.bench_function("linear_scan_check_user", |b| {
        b.iter(|| {
            next = (next + 1) % lookups.len();
            black_box(scan.check_user(&lookups[next]).is_some())
        })
    });
    group.bench_function("naive_scan_edit_distance_to_every_entry", |b| {
        b.iter(|| {
            next = (next + 1) % lookups.len();
            black_box(naive.check_user(&lookups[next]))
        })
    });
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("build_index", |b| {
        b.iter_batched(|| entries.clone(), BlockIndex::build, BatchSize::LargeInput)
    });
    group.finish();
    criterion.final_summary();

    let index_times: Vec<Duration> = lookups
        .iter()
        .map(|id| {
            let t = Instant::now();
            black_box(index.check_user(id).is_some());
            t.elapsed()
        })
        .collect();
    let hits = lookups
        .iter()
        .filter(|id| index.check_user(id).is_some())
        .count();
    let (hit_times, miss_times): (Vec<_>, Vec<_>) = index_times
        .iter()
        .zip(&lookups)
        .partition(|(_, id)| index.check_user(id).is_some());
    let part = |v: Vec<(&Duration, &UserId)>| {
        let d: Vec<Duration> = v.into_iter().map(|(d, _)| *d).collect();
        if d.is_empty() {
            0.0
        } else {
            median(d).as_nanos() as f64 / 1e3
        }
    };
    let (hit_us, miss_us) = (part(hit_times), part(miss_times));
    let scan_times: Vec<Duration> = lookups
        .iter()
        .step_by(lookups.len() / 21)
        .take(21)
        .map(|id| {
            let t = Instant::now();
            let slow = black_box(scan.check_user(id));
            let elapsed = t.elapsed();
            assert_eq!(
                slow,
                index.check_user(id),
                "index and scan disagree on {id}"
            );
            elapsed
        })
        .collect();
    let naive_times: Vec<Duration> = lookups
        .iter()
        .step_by(lookups.len() / 21)
        .take(21)
        .map(|id| {
            let t = Instant::now();
            black_box(naive.check_user(id));
            t.elapsed()
        })
        .collect();
    let build_times: Vec<Duration> = (0..3)
        .map(|_| {
            let copy = entries.clone();
            let t = Instant::now();
            black_box(BlockIndex::build(copy));
            t.elapsed()
        })
        .collect();
    let index_ns = median(index_times).as_nanos() as f64;
    // The goal's baseline is the naive scan; the reference matcher (which exits early on an
    // exact, glob or family match) is reported too, as a stricter comparison.
    let scan_ns = median(naive_times).as_nanos() as f64;
    let reference_ns = median(scan_times).as_nanos() as f64;
    let build_ms = median(build_times).as_secs_f64() * 1e3;
    let ratio = scan_ns / index_ns.max(1.0);
    let reference_ratio = reference_ns / index_ns.max(1.0);
    let stats = index.stats();
    // The stored form: what the list object publishes and every isolate opens in place.
    let blob = BlockIndex::compile(&entries, &[], &Policy::default());
    let blob_bytes = blob.len();
    let t = Instant::now();
    let opened = BlockIndex::open(blob, &Policy::default()).expect("the compiled index opens");
    let open_us = t.elapsed().as_secs_f64() * 1e6;
    let t = Instant::now();
    black_box(opened.check_user(&lookups[lookups.len() / 2]).is_some());
    let first_us = t.elapsed().as_secs_f64() * 1e6;
    println!(
        "blocklist: compiled index {blob_bytes} bytes for {n} entries, opened in {open_us:.0} µs, \
         first lookup {first_us:.1} µs, {:.0} lookups/s warm",
        1e9 / index_ns.max(1.0)
    );
    println!(
        "blocklist: index median {:.2} µs, naive scan median {:.0} µs, ratio {ratio:.0} \
         (early-exit reference scan {:.0} µs, ratio {reference_ratio:.0}), build {build_ms:.0} ms \
         ({n} entries, {} globs, {} family + {} near-miss postings; {hits}/{} lookups blocked, \
         median {hit_us:.2} µs when blocked, {miss_us:.2} µs when not)",
        index_ns / 1e3,
        scan_ns / 1e3,
        reference_ns / 1e3,
        stats.globs,
        stats.family_postings,
        stats.near_miss_postings,
        lookups.len(),
    );
    let realistic = realistic(n, &mut Rng(0x9e37_79b9_7f4a_7c15));
    if let Some(path) = std::env::var_os("KNOCK_BENCH_JSON") {
        let json = format!(
            "{{\"index_median_ns\":{index_ns:.0},\"scan_median_ns\":{scan_ns:.0},\"ratio\":{ratio:.1},\"reference_scan_median_ns\":{reference_ns:.0},\"reference_ratio\":{reference_ratio:.1},\"build_ms\":{build_ms:.1},\"entries\":{n},\"index_bytes\":{blob_bytes},\"open_us\":{open_us:.1},\"first_lookup_us\":{first_us:.1},\"realistic\":{realistic}}}\n"
        );
        if let Err(e) = std::fs::write(&path, json) {
            eprintln!("blocklist: cannot write {}: {e}", path.to_string_lossy());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Graded verdicts on realistic handles

#[derive(Default, Clone, Copy)]
struct Tally {
    block: usize,
    hold: usize,
    allow: usize,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Block => self.block += 1,
            Outcome::Hold => self.hold += 1,
            Outcome::Allow => self.allow += 1,
        }
    }

    fn n(&self) -> usize {
        self.block + self.hold + self.allow
    }

    fn pct(&self, k: usize) -> f64 {
        100.0 * k as f64 / self.n().max(1) as f64
    }

    fn row(&self, label: &str) -> String {
        format!(
            "  {label:<34} {:>6} {:>7} {:>7} {:>7}   block {:>6.2}%  hold {:>6.2}%  allow {:>6.2}%",
            self.n(),
            self.block,
            self.hold,
            self.allow,
            self.pct(self.block),
            self.pct(self.hold),
            self.pct(self.allow),
        )
    }

    fn json(&self) -> String {
        format!(
            "{{\"n\":{},\"block\":{},\"hold\":{},\"allow\":{},\"block_pct\":{:.3},\"hold_pct\":{:.3},\"allow_pct\":{:.3}}}",
            self.n(),
            self.block,
            self.hold,
            self.allow,
            self.pct(self.block),
            self.pct(self.hold),
            self.pct(self.allow)
        )
    }
}

/// The policy of the realistic runs: the defaults, or the `BLOCKLIST_*` settings in the
/// environment, as the worker reads them.
fn bench_policy() -> Policy {
    Policy::from_vars(|name| std::env::var(name).ok()).unwrap_or_else(|errors| {
        for e in errors {
            eprintln!("blocklist: {e}");
        }
        std::process::exit(2)
    })
}

fn outcome_of(index: &BlockIndex, id: &UserId) -> Outcome {
    index.check_user(id).map_or(Outcome::Allow, |v| v.outcome())
}

/// One run: `blocked` handles of `split` among `entries` list entries (filled with `filler`),
/// against 2,000 honest handles and the evasions. Returns the JSON object.
fn evaluate(
    generator: &handles::Generator,
    split: handles::Split,
    blocked: usize,
    entries: usize,
    filler: &Filler,
    seed: u64,
) -> String {
    let (filler_name, filler) = (filler.name, &filler.entries);
    let mut rng = handles::Rng(seed);
    let mut seen = std::collections::HashSet::new();
    let mut targets = Vec::with_capacity(blocked);
    while targets.len() < blocked {
        let h = generator.handle(split, &mut rng);
        if seen.insert(h.local.clone()) {
            targets.push(h);
        }
    }
    let mut list: Vec<Entry> = targets
        .iter()
        .filter_map(|h| Entry::parse(&h.id(), Some("ban evasion".into()), 1_700_000_000_000).ok())
        .collect();
    list.extend(
        filler
            .iter()
            .take(entries.saturating_sub(list.len()))
            .cloned(),
    );
    let blocked_ids: std::collections::HashSet<String> = targets.iter().map(|h| h.id()).collect();
    // The list starts with the blocked handles; every later entry is filler.
    let own = list.len().min(targets.len());
    let policy = bench_policy();
    let index = BlockIndex::build_with(list.clone(), policy);
    // Namesakes: honest handles of the same family as a user-ID entry that reaches its family
    // (an entry matched only exactly has no namesakes).
    let families: std::collections::HashSet<String> = list
        .iter()
        .enumerate()
        .filter(|(i, e)| {
            e.kind == EntryKind::UserId && index.reach_of(*i).is_some_and(|r| r >= Reach::Family)
        })
        .filter_map(|(_, e)| UserId::parse(&e.pattern).ok())
        .map(|u| family_key(u.localpart()))
        .collect();
    // Namesakes by initial: honest handles whose family key differs from such an entry's only at
    // the first letter (`ksanders`, `asanders`; `gautier`, `vgautier`), as strings can't tell
    // them from an evasion either. A subset of the others, counted apart for information.
    let rest = |k: &str| -> Option<String> {
        let r: String = k.chars().skip(1).collect();
        (r.chars().count() >= 4).then_some(r)
    };
    let rests: std::collections::HashSet<String> =
        families.iter().filter_map(|k| rest(k)).collect();
    let initial_namesake = |k: &str| {
        rest(k).is_some_and(|r| rests.contains(&r) || families.contains(&r)) || rests.contains(k)
    };
    // The blocked handles alone, to tell their collateral from the filler's.
    let alone = BlockIndex::build_with(list[..own].to_vec(), policy);
    let mut caught_by: std::collections::BTreeMap<(&'static str, &'static str, String), usize> =
        std::collections::BTreeMap::new();
    let mut honest_alone = Tally::default();
    let show = std::env::var_os("KNOCK_BENCH_MISSES").is_some();

    let mut times = Vec::new();
    let mut timed = |id: &UserId| {
        let t = Instant::now();
        let o = outcome_of(&index, id);
        times.push(t.elapsed());
        o
    };

    let mut by_technique = vec![Tally::default(); handles::Technique::ALL.len()];
    let mut evasions = Tally::default();
    for (ti, &technique) in handles::Technique::ALL.iter().enumerate() {
        for target in &targets {
            let Some(h) = handles::evade(target, technique, &mut rng) else {
                continue;
            };
            let Ok(id) = UserId::parse(&h.id()) else {
                continue;
            };
            let o = timed(&id);
            by_technique[ti].add(o);
            evasions.add(o);
            if show && o == Outcome::Allow {
                println!(
                    "    let in: {} ({}) evading {}",
                    id,
                    technique.name(),
                    target.id()
                );
            }
        }
    }
    let (mut honest, mut namesakes, mut others, mut by_initial) = (
        Tally::default(),
        Tally::default(),
        Tally::default(),
        Tally::default(),
    );
    let mut by_glob = 0;
    let mut made = 0;
    while made < 2_000 {
        let h = generator.handle(split, &mut rng);
        if blocked_ids.contains(&h.id()) {
            continue;
        }
        made += 1;
        let Ok(id) = UserId::parse(&h.id()) else {
            continue;
        };
        let o = timed(&id);
        honest.add(o);
        honest_alone.add(outcome_of(&alone, &id));
        if let Some(v) = index.check_user(&id) {
            let source = if v.index < own {
                "blocked handle"
            } else {
                "filler"
            };
            let why = format!("{:?}", v.grade.why);
            let why = why.split([' ', '{']).next().unwrap_or("").to_owned();
            *caught_by
                .entry((
                    source,
                    v.outcome().as_str(),
                    format!("{:?} / {why}", v.rule),
                ))
                .or_default() += 1;
        }
        if o == Outcome::Block
            && index
                .check_user(&id)
                .is_some_and(|v| v.rule == knock::domain::blocklist::MatchRule::Glob)
        {
            by_glob += 1;
        }
        let key = family_key(&h.local);
        if families.contains(&key) {
            namesakes.add(o);
        } else {
            others.add(o);
            if initial_namesake(&key) {
                by_initial.add(o);
            }
        }
        if show
            && (o == Outcome::Block
                || (o == Outcome::Hold && !families.contains(&family_key(&h.local))))
        {
            let why = index
                .check_user(&id)
                .map(|v| v.explain())
                .unwrap_or_default();
            println!("    honest {}: {id}: {why}", o.as_str());
        }
    }
    let median_ns = median(times.clone()).as_nanos();
    let mut sorted = times;
    sorted.sort_unstable();
    let p99_ns = sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)].as_nanos();

    println!(
        "realistic handles, {split}, {blocked} blocked among {} entries (filler: {filler_name}): lookup median {:.2} µs, p99 {:.2} µs",
        list.len(),
        median_ns as f64 / 1e3,
        p99_ns as f64 / 1e3
    );
    println!(
        "  {:<34} {:>6} {:>7} {:>7} {:>7}",
        "technique / population", "n", "block", "hold", "allow"
    );
    let mut techniques = Vec::new();
    for (ti, &technique) in handles::Technique::ALL.iter().enumerate() {
        println!("{}", by_technique[ti].row(technique.name()));
        techniques.push(format!(
            "\"{}\":{}",
            technique.name(),
            by_technique[ti].json()
        ));
    }
    println!("{}", evasions.row("all evasions"));
    println!("{}", honest.row("honest handles"));
    println!("{}", namesakes.row("  of which same family as an entry"));
    println!("{}", others.row("  of which other"));
    println!("{}", by_initial.row("    of which initial only differs"));
    println!(
        "  {:<34} {:>6} {:>7}   (globs of the filler list, not fuzzy evidence)",
        "  honest blocked by a glob", "", by_glob
    );
    println!(
        "{}",
        honest_alone.row("honest vs the blocked handles alone")
    );
    println!("  honest caught, by the entry that caught them, outcome, rule / reason:");
    for ((source, outcome, rule), n) in &caught_by {
        println!("    {source:<15} {outcome:<6} {rule:<40} {n:>5}");
    }
    let caught = 100.0 * (evasions.block + evasions.hold) as f64 / evasions.n().max(1) as f64;
    let of_all = |k: usize| 100.0 * k as f64 / honest.n().max(1) as f64;
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    let median_us = median_ns as f64 / 1e3;
    println!(
        "  evasions blocked or held {caught:.2}% (goal >= 99%: {}), honest blocked {:.2}% (goal <= 0.1%: {}), honest held {:.2}% (goal <= 1%: {}; {:.2}% apart from same-family namesakes: {}; {:.2}% apart from namesakes by initial too), lookup median {median_us:.2} µs (goal < 10 µs: {}){}",
        verdict(caught >= 99.0),
        honest.pct(honest.block),
        verdict(honest.pct(honest.block) <= 0.1),
        honest.pct(honest.hold),
        verdict(honest.pct(honest.hold) <= 1.0),
        of_all(others.hold),
        verdict(of_all(others.hold) <= 1.0),
        of_all(others.hold - by_initial.hold),
        verdict(median_us < 10.0),
        if blocked == 100 { "" } else { " [goals are set at 100 blocked; shown for comparison]" },
    );
    format!(
        "{{\"split\":\"{split}\",\"filler\":\"{filler_name}\",\"blocked\":{blocked},\"entries\":{},\"lookup_median_ns\":{median_ns},\"lookup_p99_ns\":{p99_ns},\"evasions_caught_pct\":{caught:.3},\"evasions\":{},\"by_technique\":{{{}}},\"honest\":{},\"honest_same_family\":{},\"honest_other\":{},\"honest_other_initial\":{},\"honest_vs_blocked_alone\":{},\"honest_blocked_by_glob\":{by_glob}}}",
        list.len(),
        evasions.json(),
        techniques.join(","),
        honest.json(),
        namesakes.json(),
        others.json(),
        by_initial.json(),
        honest_alone.json()
    )
}

/// What fills the list up to its size, and its name in the report.
///
/// - `synthetic`: the generated entries of the speed benchmark above (`generate`), matched as
///   Knock's own list. About a third of them are common first names and surnames from small lists,
///   alone or with words and digits, plus `@maria?5:*`-style globs: in effect tens of thousands
///   of blocked people with common names. The figures before this filler was questioned.
/// - `ban_list_fuzzy`: `policy_list`, shaped like a shared Matrix ban list, matched as if it
///   were Knock's own list (every rule by default reach).
/// - `ban_list_exact`: the same list as a subscribed list is matched by default: its user IDs
///   only exactly (reach exact), its globs as globs. The blocked handles stay fuzzy.
struct Filler {
    name: &'static str,
    entries: Vec<Entry>,
}

/// The realistic runs, as a JSON object; the commonness lookup's median too.
fn realistic(n: usize, rng: &mut Rng) -> String {
    let generator = handles::Generator::new();
    let synthetic = generate(n, rng);
    let ban_list = policy_list(n, &mut Rng(0x0bad_cafe_f00d_d00d));
    let subscribed: Vec<Entry> = ban_list
        .iter()
        .map(|e| {
            let reach = (e.kind == EntryKind::UserId).then_some(Reach::Exact);
            e.clone().with_reach(reach)
        })
        .collect();
    let fillers = [
        Filler {
            name: "synthetic",
            entries: synthetic,
        },
        Filler {
            name: "ban_list_fuzzy",
            entries: ban_list,
        },
        Filler {
            name: "ban_list_exact",
            entries: subscribed,
        },
    ];
    let chosen = std::env::var("KNOCK_BENCH_FILLER").ok();
    let mut runs = Vec::new();
    for filler in fillers.iter().filter(|f| {
        chosen
            .as_deref()
            .is_none_or(|c| c.split(',').any(|c| c == f.name))
    }) {
        let splits = std::env::var("KNOCK_BENCH_SPLIT").ok();
        for (si, split) in handles::Split::ALL
            .into_iter()
            .enumerate()
            .filter(|(_, s)| {
                splits
                    .as_deref()
                    .is_none_or(|c| c.split(',').any(|c| c == s.to_string()))
            })
        {
            for (i, blocked) in [100usize, 1_000].into_iter().enumerate() {
                // The in-sample and seen splits keep the seeds they always had.
                let seed = 0x5eed_0000 + i as u64 * 7919 + si as u64;
                runs.push(evaluate(&generator, split, blocked, n, filler, seed));
            }
        }
    }
    let mut key_rng = handles::Rng(rng.next() | 1);
    let keys: Vec<String> = (0..2_000)
        .map(|_| {
            family_key(
                &generator
                    .handle(handles::Split::InSample, &mut key_rng)
                    .local,
            )
        })
        .collect();
    let times: Vec<Duration> = keys
        .iter()
        .map(|k| {
            let t = Instant::now();
            black_box(commonness::namesakes_per_million(k));
            t.elapsed()
        })
        .collect();
    let commonness_ns = median(times).as_nanos();
    let share_times: Vec<Duration> = keys
        .iter()
        .map(|k| {
            let t = Instant::now();
            for _ in 0..100 {
                black_box(commonness::share(black_box(k)));
            }
            t.elapsed() / 100
        })
        .collect();
    println!(
        "commonness: one share() lookup median {:.0} ns",
        median(share_times).as_nanos()
    );
    println!(
        "commonness: namesakes_per_million median {:.2} µs",
        commonness_ns as f64 / 1e3
    );
    format!(
        "{{\"commonness_median_ns\":{commonness_ns},\"runs\":[{}]}}",
        runs.join(",")
    )
}
