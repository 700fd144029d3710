use proptest::prelude::*;

use super::normalize::{deletion_hashes, hash_key, probe_depth};
use super::policy::{MemberAction, Why};
use super::*;

fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn fixture() -> Vec<Entry> {
    let mut list = BlockList::new();
    let report = list.import_text(
        "# the fixture\n\
         @trollking:localhost  # ban evasion\n\
         @troll:example.org\n\
         @alice:example.org\n\
         @moderator:example.org\n\
         @christopher_robin:example.org\n\
         @spam*:*  # spam wave\n\
         *:evil.example\n\
         @*:*.evil.example\n\
         @bot-??:example.org\n\
         display: Alice Admin  # impersonation\n\
         display: Matrix Support\n",
        1_700_000_000_000,
    );
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(report.added, 11);
    list.entries
}

/// `(technique, candidate, blocking pattern and rule, or None for "not blocked")`.
type Case = (
    &'static str,
    &'static str,
    Option<(&'static str, MatchRule)>,
);

/// Candidates are user IDs.
const ID_CASES: &[Case] = {
    use MatchRule::*;
    &[
        (
            "exact id",
            "@troll:example.org",
            Some(("@troll:example.org", Exact)),
        ),
        (
            "upper-case localpart",
            "@TROLL:example.org",
            Some(("@troll:example.org", Exact)),
        ),
        (
            "upper-case server",
            "@troll:EXAMPLE.org",
            Some(("@troll:example.org", Exact)),
        ),
        (
            "matrix.to link",
            "https://matrix.to/#/@troll:example.org",
            Some(("@troll:example.org", Exact)),
        ),
        (
            "missing sigil",
            "trollking:localhost",
            Some(("@trollking:localhost", Exact)),
        ),
        (
            "other server",
            "@troll:other.net",
            Some(("@troll:example.org", Family)),
        ),
        (
            "other server with a port",
            "@trollking:localhost:8448",
            Some(("@trollking:localhost", Family)),
        ),
        (
            "leet digits",
            "@tr0llk1ng:localhost",
            Some(("@trollking:localhost", Family)),
        ),
        (
            "leet digits on another server",
            "@tr0llk1ng:matrix.org",
            Some(("@trollking:localhost", Family)),
        ),
        (
            "dotted separators",
            "@t.r.o.l.l.k.i.n.g:localhost",
            Some(("@trollking:localhost", Family)),
        ),
        (
            "underscore separator",
            "@troll_king:localhost",
            Some(("@trollking:localhost", Family)),
        ),
        (
            "dash separator",
            "@troll-king:localhost",
            Some(("@trollking:localhost", Family)),
        ),
        (
            "equals separator",
            "@troll=king:localhost",
            Some(("@trollking:localhost", Family)),
        ),
        (
            "slash separator",
            "@troll/king:localhost",
            Some(("@trollking:localhost", Family)),
        ),
        (
            "plus separator",
            "@troll+king:localhost",
            Some(("@trollking:localhost", Family)),
        ),
        (
            "numeric suffix",
            "@trollking99:localhost",
            Some(("@trollking:localhost", Family)),
        ),
        (
            "year suffix",
            "@trollking2024:localhost",
            Some(("@trollking:localhost", Family)),
        ),
        (
            "numeric prefix",
            "@2troll:example.org",
            Some(("@troll:example.org", Family)),
        ),
        (
            "numeric prefix and suffix",
            "@99troll99:example.org",
            Some(("@troll:example.org", Family)),
        ),
        (
            "repeated letters",
            "@trooollllking:localhost",
            Some(("@trollking:localhost", Family)),
        ),
        (
            "single l for double l",
            "@trolking:localhost",
            Some(("@trollking:localhost", Family)),
        ),
        (
            "ones for ls",
            "@tro11king:localhost",
            Some(("@trollking:localhost", Family)),
        ),
        (
            "i for l",
            "@troiiking:localhost",
            Some(("@trollking:localhost", Family)),
        ),
        (
            "leading leet t",
            "@7roll:example.org",
            Some(("@troll:example.org", Family)),
        ),
        (
            "trailing one for l",
            "@trol1:example.org",
            Some(("@troll:example.org", Family)),
        ),
        (
            "leet at the edge behind a counter",
            "@7r0llk1ng99:elsewhere.net",
            Some(("@trollking:localhost", Family)),
        ),
        (
            "separators and leet together",
            "@7.r.0.1.1:example.org",
            Some(("@troll:example.org", Family)),
        ),
        (
            "leet a",
            "@4lice:example.org",
            Some(("@alice:example.org", Family)),
        ),
        (
            "leet l in alice",
            "@a1ice:elsewhere.org",
            Some(("@alice:example.org", Family)),
        ),
        (
            "birth year",
            "@alice1987:example.org",
            Some(("@alice:example.org", Family)),
        ),
        (
            "leet e and trailing counter",
            "@alic3_01:example.org",
            Some(("@alice:example.org", Family)),
        ),
        (
            "dropped letter",
            "@trollkin:localhost",
            Some(("@trollking:localhost", Distance(1))),
        ),
        (
            "dropped inner letter",
            "@trollkng:localhost",
            Some(("@trollking:localhost", Distance(1))),
        ),
        (
            "transposed letters",
            "@trollkign:localhost",
            Some(("@trollking:localhost", Distance(1))),
        ),
        (
            "substituted letter",
            "@trollkimg:localhost",
            Some(("@trollking:localhost", Distance(1))),
        ),
        (
            "extra letter",
            "@trollkings:localhost",
            Some(("@trollking:localhost", Distance(1))),
        ),
        (
            "typo and leet",
            "@tr0llkinq:localhost",
            Some(("@trollking:localhost", Distance(1))),
        ),
        (
            "plural of a medium name",
            "@moderators:example.org",
            Some(("@moderator:example.org", Distance(1))),
        ),
        (
            "missing letter of a medium name",
            "@modrator:example.org",
            Some(("@moderator:example.org", Distance(1))),
        ),
        (
            "two edits on a long name",
            "@christofer_robin:example.org",
            Some(("@christopher_robin:example.org", Distance(2))),
        ),
        (
            "transposition on a long name",
            "@christohper.robin:other.org",
            Some(("@christopher_robin:example.org", Distance(1))),
        ),
        (
            "glob prefix",
            "@spammer:anywhere.org",
            Some(("@spam*:*", Glob)),
        ),
        (
            "glob prefix in upper case",
            "@SPAM42:x.org",
            Some(("@spam*:*", Glob)),
        ),
        (
            "glob on the server",
            "@nice:evil.example",
            Some(("*:evil.example", Glob)),
        ),
        (
            "glob on a subdomain",
            "@nice:mx.evil.example",
            Some(("@*:*.evil.example", Glob)),
        ),
        (
            "glob question marks",
            "@bot-42:example.org",
            Some(("@bot-??:example.org", Glob)),
        ),
        (
            "glob beats family",
            "@spamtroll:example.org",
            Some(("@spam*:*", Glob)),
        ),
        ("trolley is another word", "@trolley:localhost", None),
        ("alicia is another person", "@alicia:example.org", None),
        (
            "alice as part of a longer name",
            "@alicewonder:example.org",
            None,
        ),
        // `troll` is five letters as written (its family key `troi` has four), so a letter more
        // is a near miss, held (see `a_near_miss_of_a_five_letter_name_is_held_not_blocked`).
        (
            "trolls: one letter more on a five-letter name",
            "@trolls:example.org",
            Some(("@troll:example.org", Distance(1))),
        ),
        (
            "stroll: one letter more on a five-letter name",
            "@stroll:example.org",
            Some(("@troll:example.org", Distance(1))),
        ),
        ("patrol", "@patrol:example.org", None),
        ("unrelated short name", "@bob:example.org", None),
        (
            "unrelated long name",
            "@margaret_thatcher:example.org",
            None,
        ),
        ("two edits on a medium name", "@madrator:example.org", None),
        (
            "three edits on a long name",
            "@kristofer_robin:example.org",
            None,
        ),
        (
            "server suffix without the dot",
            "@nice:notevil.example",
            None,
        ),
        (
            "glob question marks count characters",
            "@bot-420:example.org",
            None,
        ),
        (
            "glob prefix must be at the start",
            "@nospam:example.org",
            None,
        ),
    ]
};

/// Candidates are display names.
const NAME_CASES: &[Case] = {
    use MatchRule::*;
    &[
        ("same display name", "Alice Admin", Some(("Alice Admin", DisplayName))),
        ("case and spacing", "alice   ADMIN", Some(("Alice Admin", DisplayName))),
        ("cyrillic capital a", "\u{410}lice \u{410}dmin", Some(("Alice Admin", DisplayName))),
        ("cyrillic small o", "Matrix Supp\u{43e}rt", Some(("Matrix Support", DisplayName))),
        ("greek omicron", "Matrix Supp\u{3bf}rt", Some(("Matrix Support", DisplayName))),
        ("fullwidth letters", "\u{ff21}\u{ff4c}\u{ff49}\u{ff43}\u{ff45} \u{ff21}\u{ff44}\u{ff4d}\u{ff49}\u{ff4e}", Some(("Alice Admin", DisplayName))),
        ("circled letters", "\u{24d0}\u{24db}\u{24d8}\u{24d2}\u{24d4} \u{24d0}\u{24d3}\u{24dc}\u{24d8}\u{24dd}", Some(("Alice Admin", DisplayName))),
        ("mathematical bold letters", "\u{1d400}\u{1d425}\u{1d422}\u{1d41c}\u{1d41e} \u{1d400}\u{1d41d}\u{1d426}\u{1d422}\u{1d427}", Some(("Alice Admin", DisplayName))),
        ("digit one for l", "A1ice Admin", Some(("Alice Admin", DisplayName))),
        ("capital I for l", "AIice Admin", Some(("Alice Admin", DisplayName))),
        ("rn for m", "Alice Adrnin", Some(("Alice Admin", DisplayName))),
        ("zero-width space", "Alice\u{200b} Admin", Some(("Alice Admin", DisplayName))),
        ("diacritics", "Al\u{ed}c\u{e9} Admin", Some(("Alice Admin", DisplayName))),
        ("combining marks", "Alice\u{301} Admin\u{308}", Some(("Alice Admin", DisplayName))),
        ("emoji decoration", "Alice Admin \u{2705}", Some(("Alice Admin", DisplayName))),
        ("punctuation", "Alice-Admin!", Some(("Alice Admin", DisplayName))),
        ("numeric suffix", "Alice Admin 2", Some(("Alice Admin", DisplayName))),
        ("zero for o", "Matrix Supp0rt", Some(("Matrix Support", DisplayName))),
        ("typo", "Matrix Suport Team", None),
        ("dropped letter", "Alice Admn", Some(("Alice Admin", Distance(2)))),
        ("swapped letters", "Alcie Admin", Some(("Alice Admin", Distance(1)))),
        ("different person", "Bob Builder", None),
        ("first word only", "Alice", None),
        ("shared first word", "Alice Cooper", None),
    ]
};

#[test]
fn the_table_of_evasions_and_false_positives_holds() {
    let entries = fixture();
    let index = BlockIndex::build(entries.clone());
    let scan = LinearScan::new(&entries);
    assert!(ID_CASES.len() + NAME_CASES.len() >= 60);
    let mut failures = Vec::new();
    for &(technique, candidate, expected) in ID_CASES {
        let id = user(candidate);
        let got = index.check_user(&id);
        let got_key = got.as_ref().map(|v| (v.entry.pattern.as_str(), v.rule));
        if got_key != expected {
            failures.push(format!(
                "{technique}: {candidate} gave {got_key:?}, want {expected:?}"
            ));
        }
        let reference = scan.check_user(&id);
        assert_eq!(got, reference, "{technique}: index and reference disagree");
        if let Some(v) = got {
            assert!(v.explain().contains(&v.entry.pattern), "{}", v.explain());
        }
    }
    for &(technique, candidate, expected) in NAME_CASES {
        let got = index.check_display_name(candidate);
        let got_key = got.as_ref().map(|v| (v.entry.pattern.as_str(), v.rule));
        if got_key != expected {
            failures.push(format!(
                "{technique}: {candidate:?} gave {got_key:?}, want {expected:?}"
            ));
        }
        assert_eq!(got, scan.check_display_name(candidate), "{technique}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn blocking_trollking_catches_its_variants_but_not_trolley() {
    let list = vec![Entry::parse("@trollking:localhost", None, 0).unwrap()];
    let index = BlockIndex::build(list);
    for evader in [
        "@tr0llk1ng:localhost",
        "@t.r.o.l.l.k.i.n.g:localhost",
        "@trollking99:localhost",
    ] {
        let v = index.check_user(&user(evader)).unwrap();
        assert_eq!(v.entry.pattern, "@trollking:localhost");
        assert_eq!(v.rule, MatchRule::Family);
    }
    assert!(index.check_user(&user("@trolley:localhost")).is_none());
}

#[test]
fn verdicts_explain_themselves() {
    let entries = fixture();
    let index = BlockIndex::build(entries);
    let say = |id: &str| index.check_user(&user(id)).unwrap().explain();
    assert_eq!(
        say("@tr0llk1ng:localhost"),
        "@tr0llk1ng:localhost matches blocked @trollking:localhost (family: both read as troiking); reason: ban evasion"
    );
    assert_eq!(
        say("@troll:example.org"),
        "@troll:example.org matches blocked @troll:example.org (exact ID)"
    );
    assert_eq!(
        say("@spam1:x.org"),
        "@spam1:x.org matches blocked pattern @spam*:* (glob); reason: spam wave"
    );
    assert_eq!(
        say("@trollkin:localhost"),
        "@trollkin:localhost matches blocked @trollking:localhost (near miss: troiikin is 1 edit from troiiking); reason: ban evasion"
    );
    let name = index
        .check_display_name("\u{410}lice Admin")
        .unwrap()
        .explain();
    assert_eq!(
        name,
        "display name \"\u{410}lice Admin\" matches blocked display name \"Alice Admin\" (look-alike: both fold to aiceadrnin); reason: impersonation"
    );
}

#[test]
fn the_earliest_entry_wins_within_a_rule() {
    let entries = vec![
        Entry::parse("@troll:a.org", None, 0).unwrap(),
        Entry::parse("@tr0ll:b.org", None, 0).unwrap(),
    ];
    let index = BlockIndex::build(entries);
    assert_eq!(index.check_user(&user("@troll9:c.org")).unwrap().index, 0);
    assert_eq!(
        index.check_user(&user("@tr0ll:b.org")).unwrap().rule,
        MatchRule::Exact
    );
}

#[test]
fn the_closest_near_miss_wins() {
    let entries = vec![
        Entry::parse("@abcdefghijkl:a.org", None, 0).unwrap(),
        Entry::parse("@abcdefghijkx:a.org", None, 0).unwrap(),
    ];
    let index = BlockIndex::build(entries);
    let v = index.check_user(&user("@abcdefghijkxy:a.org")).unwrap();
    assert_eq!((v.index, v.rule), (1, MatchRule::Distance(1)));
}

#[test]
fn family_keys_follow_the_documented_steps() {
    assert_eq!(family_key("trollking"), "troiking");
    assert_eq!(family_key("TrollKing"), "troiking");
    assert_eq!(family_key("tr0llk1ng"), "troiking");
    assert_eq!(family_key("t.r_o-l=l/k+i n g"), "troiking");
    assert_eq!(family_key("trollking99"), "troiking");
    assert_eq!(family_key("2troll"), family_key("troll"));
    assert_eq!(family_key("trooolll"), "troi");
    assert_eq!(family_key("$p@m|!"), "spami");
    assert_eq!(family_key("2024"), "zoza");
    assert_eq!(family_key("._="), "");
}

#[test]
fn leet_digits_are_folded() {
    assert_eq!(family_key("x0123456789x"), family_key("xoizeasgtbgx"));
    for (leet, plain) in [
        ("h4x0r", "haxor"),
        ("ev1l", "evil"),
        ("sp4mmer", "spammer"),
        ("b1gb0ss", "bigboss"),
    ] {
        assert_eq!(family_key(leet), family_key(plain), "{leet}");
    }
}

#[test]
fn one_l_i_bar_and_bang_collide() {
    let keys: Vec<String> = ["x1x", "xlx", "xix", "x|x", "x!x", "xLx", "xIx"]
        .iter()
        .map(|s| family_key(s))
        .collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
}

#[test]
fn a_digit_touching_the_letters_is_also_read_as_a_letter() {
    assert_eq!(family_readings("7roll"), ["roi", "troi"]);
    assert_eq!(
        family_readings("12troll5"),
        ["troi", "trois", "ztroi", "ztrois", "iztroi", "iztrois"]
    );
    assert_eq!(family_readings("troll"), ["troi"]);
}

#[test]
fn free_text_folds_look_alikes_case_and_separators() {
    assert_eq!(fold_free_text("Alice Admin"), "aliceadrnin");
    assert_eq!(fold_free_text("\u{410}lice \u{410}dmin"), "aliceadrnin");
    assert_eq!(fold_free_text("\u{ff21}lice"), "alice");
    assert_eq!(fold_free_text("A l i c e!"), "alice");
    assert_eq!(fold_free_text("ALICE"), fold_free_text("alice"));
    assert_eq!(fold_free_text("   "), "");
}

#[test]
fn distance_thresholds_grow_with_the_key() {
    let got: Vec<usize> = (0..=34).map(allowed_distance).collect();
    let mut want = vec![0; 6];
    want.extend([1; 4]);
    want.extend([2; 23]);
    want.extend([0; 2]);
    assert_eq!(got, want);
    let probe = |allowance: fn(usize) -> usize| {
        (0..14)
            .map(|len| probe_depth(len, allowance))
            .collect::<Vec<_>>()
    };
    let (o, a, b) = (Some(0), Some(1), Some(2));
    assert_eq!(
        probe(allowed_distance),
        [None, None, None, None, None, o, a, a, a, a, b, b, b, b]
    );
    // User IDs look for near misses of short keys too (they count only with the same counter).
    let got: Vec<usize> = (0..=34).map(near_allowance).collect();
    let mut want = vec![0; 3];
    want.extend([1; 7]);
    want.extend([2; 23]);
    want.extend([0; 2]);
    assert_eq!(got, want);
    assert_eq!(
        probe(near_allowance),
        [None, None, o, a, a, a, a, a, a, a, b, b, b, b]
    );
}

#[test]
fn optimal_string_alignment_counts_a_transposition_as_one_edit() {
    let d = |a: &str, b: &str| {
        osa_distance(
            &a.chars().collect::<Vec<_>>(),
            &b.chars().collect::<Vec<_>>(),
        )
    };
    assert_eq!(d("", ""), 0);
    assert_eq!(d("abc", ""), 3);
    assert_eq!(d("", "ab"), 2);
    assert_eq!(d("kitten", "sitting"), 3);
    assert_eq!(d("troiking", "troikign"), 1);
    assert_eq!(d("ca", "abc"), 3);
    assert_eq!(d("abcdef", "badcfe"), 3);
}

#[test]
fn deletions_hash_the_same_whichever_position_produced_them() {
    let hashes = |s: &str, depth: usize| {
        let chars: Vec<char> = s.chars().collect();
        let mut out = Vec::new();
        deletion_hashes(&chars, depth, &mut out);
        out.sort_unstable();
        out.dedup();
        out
    };
    let direct = |words: &[&str]| {
        let mut out: Vec<u32> = words.iter().map(|w| hash_key(w)).collect();
        out.sort_unstable();
        out.dedup();
        out
    };
    assert_eq!(hashes("abba", 0), direct(&["abba"]));
    assert_eq!(hashes("abba", 1), direct(&["abba", "bba", "aba", "abb"]));
    assert_eq!(
        hashes("abc", 2),
        direct(&["abc", "bc", "ac", "ab", "c", "b", "a"])
    );
    assert_eq!(hashes("", 2), direct(&[""]));
}

#[test]
fn globs_match_with_stars_and_question_marks() {
    let m = |p: &str, t: &str| glob_match(p.as_bytes(), t.as_bytes());
    assert!(m("@spam*:*", "@spam:x"));
    assert!(m("@spam*:*", "@spammer:x.org"));
    assert!(!m("@spam*:*", "@spa:x"));
    assert!(m("*:evil.example", "@a:evil.example"));
    assert!(!m("*:evil.example", "@a:evil.example.org"));
    assert!(m("@bot-??:x", "@bot-12:x"));
    assert!(!m("@bot-??:x", "@bot-1:x"));
    assert!(m("*", ""));
    assert!(!m("?", ""));
    assert!(m("a*b*c", "aXXbYYc"));
    assert!(!m("a*b*c", "aXXbYY"));
}

#[test]
fn a_pathological_glob_finishes_quickly() {
    let text = format!("@{}:x", "a".repeat(250));
    let pattern = format!("{}b", "*a".repeat(60));
    assert!(!glob_match(pattern.as_bytes(), text.as_bytes()));
}

#[test]
fn entries_infer_their_kind() {
    let e = Entry::parse("  @Troll:Example.org ", Some(" spam ".into()), 5).unwrap();
    assert_eq!(
        e,
        Entry {
            pattern: "@troll:example.org".into(),
            kind: EntryKind::UserId,
            reason: Some("spam".into()),
            added_at: 5,
            reach: None,
        }
    );
    assert_eq!(
        Entry::parse("SPAM*:*", None, 0).unwrap().pattern,
        "@spam*:*"
    );
    assert_eq!(
        Entry::parse("*:evil.example", None, 0).unwrap().kind,
        EntryKind::Glob
    );
    assert_eq!(
        Entry::parse("@bot??:x", None, 0).unwrap().kind,
        EntryKind::Glob
    );
    assert_eq!(Entry::parse("@a***b:x", None, 0).unwrap().pattern, "@a*b:x");
    assert_eq!(
        Entry::parse("https://matrix.to/#/@a:b.org?via=c", None, 0)
            .unwrap()
            .kind,
        EntryKind::UserId
    );
}

#[test]
fn bad_entries_are_refused_with_a_reason() {
    assert_eq!(
        Entry::parse("Alice Admin", None, 0),
        Err(EntryError::NotAUserId(MxidError::MissingColon))
    );
    assert_eq!(Entry::parse("*", None, 0), Err(EntryError::GlobTooBroad));
    assert_eq!(Entry::parse("@*:*", None, 0), Err(EntryError::GlobTooBroad));
    assert_eq!(
        Entry::parse("@a b*:x", None, 0),
        Err(EntryError::GlobInvalid)
    );
    assert_eq!(
        Entry::parse("@\u{e9}*:x", None, 0),
        Err(EntryError::GlobInvalid)
    );
    assert_eq!(Entry::display_name("  ", None, 0), Err(EntryError::Empty));
    assert_eq!(
        Entry::display_name("\u{2705}\u{2705}", None, 0),
        Err(EntryError::DisplayNameUnmatchable)
    );
    assert_eq!(
        Entry::parse("@a:b", Some("x\ny".into()), 0),
        Err(EntryError::ReasonInvalid)
    );
    assert_eq!(
        Entry::parse("@a:b", Some("x".repeat(501)), 0),
        Err(EntryError::ReasonTooLong)
    );
    assert!(!EntryError::GlobTooBroad.message().is_empty());
}

#[test]
fn invalid_stored_entries_never_match() {
    let entries = vec![
        Entry {
            pattern: "not an id".into(),
            kind: EntryKind::UserId,
            reason: None,
            added_at: 0,
            reach: None,
        },
        Entry {
            pattern: "*".into(),
            kind: EntryKind::Glob,
            reason: None,
            added_at: 0,
            reach: None,
        },
        Entry::parse("@bob:x.org", None, 0).unwrap(),
    ];
    let index = BlockIndex::build(entries);
    assert_eq!(index.len(), 3);
    assert!(index.check_user(&user("@someone:x.org")).is_none());
    assert_eq!(index.check_user(&user("@bob:y.org")).unwrap().index, 2);
}

#[test]
fn adding_refuses_duplicates_and_bumps_the_version() {
    let mut list = BlockList::new();
    assert_eq!(
        list.add(Entry::parse("@a:x.org", None, 1).unwrap()),
        AddOutcome::Added
    );
    assert_eq!(
        list.add(Entry::parse("@A:X.ORG", None, 2).unwrap()),
        AddOutcome::Duplicate { index: 0 }
    );
    assert_eq!(
        list.add(Entry::display_name("Alice Admin", None, 3).unwrap()),
        AddOutcome::Added
    );
    assert_eq!(
        list.add(Entry::display_name("\u{410}LICE admin", None, 3).unwrap()),
        AddOutcome::Duplicate { index: 1 }
    );
    assert_eq!(
        list.add(Entry::parse("@a*:x.org", None, 4).unwrap()),
        AddOutcome::Added
    );
    assert_eq!(list.version, 3);
    assert_eq!(list.entries.len(), 3);
}

#[test]
fn removing_matches_the_normalised_pattern() {
    let mut list = BlockList::new();
    list.import_text("@troll:x.org\n@spam*:*\ndisplay: Alice Admin\n", 0);
    let v = list.version;
    assert!(list.remove("@TROLL:x.org"));
    assert!(list.remove("SPAM*:*"));
    assert!(list.remove("display: alice admin"));
    assert!(!list.remove("@troll:x.org"));
    assert!(list.entries.is_empty());
    assert_eq!(list.version, v + 3);
}

#[test]
fn text_import_reports_each_bad_line_and_keeps_the_rest() {
    let mut list = BlockList::new();
    let report = list.import_text(
        "# blocked_users.txt\n\
         \n\
         @troll:example.org\n\
         not an id\n\
         @troll:example.org   # again\n\
         @spam*:*  # spam\n\
         *\n\
         display: Alice Admin # impersonation\n",
        42,
    );
    assert_eq!(report.added, 3);
    assert_eq!(report.duplicates, 1);
    let lines: Vec<(usize, EntryError)> = report.errors.iter().map(|e| (e.line, e.error)).collect();
    assert_eq!(
        lines,
        [
            (4, EntryError::NotAUserId(MxidError::MissingColon)),
            (7, EntryError::GlobTooBroad)
        ]
    );
    assert_eq!(report.errors[0].text, "not an id");
    assert_eq!(list.entries[1].reason.as_deref(), Some("spam"));
    assert_eq!(list.entries[2].kind, EntryKind::DisplayName);
    assert_eq!(list.entries[2].added_at, 42);
    assert_eq!(list.version, 1);
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.contains("\"line\":4"), "{json}");
}

#[test]
fn text_export_reads_back_the_same_entries() {
    let mut list = BlockList::new();
    list.import_text(
        "@troll:example.org # he # knows why\n@spam*:*\ndisplay: Alice Admin  # impersonation\n",
        7,
    );
    let text = list.export_text();
    assert!(text.starts_with("# Knock block list, version 1"));
    let mut back = BlockList::new();
    let report = back.import_text(&text, 7);
    assert!(report.errors.is_empty());
    assert_eq!(back.entries, list.entries);
    assert_eq!(list.entries[0].reason.as_deref(), Some("he # knows why"));
}

#[test]
fn the_json_document_round_trips_and_stays_compact() {
    let mut list = BlockList::new();
    list.import_text(
        "@troll:example.org # spam\ndisplay: Alice Admin\n@spam*:*\n",
        1_700_000_000_000,
    );
    let json = list.to_json().unwrap();
    assert_eq!(
        json,
        r#"{"version":1,"entries":[{"pattern":"@troll:example.org","kind":"user_id","reason":"spam","added_at":1700000000000},{"pattern":"Alice Admin","kind":"display_name","added_at":1700000000000},{"pattern":"@spam*:*","kind":"glob","added_at":1700000000000}]}"#
    );
    assert_eq!(BlockList::from_json(&json).unwrap(), list);
}

#[test]
fn json_import_takes_documents_and_bare_arrays_and_reports_bad_entries() {
    let mut list = BlockList::new();
    let report = list
        .import_json(
            r#"[ "@a:x.org", "@b:x.org # why", {"pattern":"@C:X.org","kind":"user_id"},
                 {"pattern":"nope","kind":"user_id"}, {"kind":"glob"}, 17 ]"#,
            9,
        )
        .unwrap();
    assert_eq!(report.added, 3);
    let lines: Vec<(usize, EntryError)> = report.errors.iter().map(|e| (e.line, e.error)).collect();
    assert_eq!(
        lines,
        [
            (4, EntryError::NotAUserId(MxidError::MissingColon)),
            (5, EntryError::Malformed),
            (6, EntryError::Malformed)
        ]
    );
    assert_eq!(list.entries[1].reason.as_deref(), Some("why"));
    assert_eq!(list.entries[2].pattern, "@c:x.org");
    assert_eq!(list.entries[2].added_at, 9);

    let mut copy = BlockList::new();
    let report = copy.import_json(&list.to_json().unwrap(), 0).unwrap();
    assert_eq!((report.added, copy.entries), (3, list.entries.clone()));
    assert!(list.import_json("{not json", 0).is_err());
}

fn generated_ids(n: usize) -> String {
    (0..n)
        .map(|i| format!("@user_{i:06}_name:server{}.example.org\n", i % 97))
        .collect()
}

#[test]
fn a_full_list_of_100k_entries_fits_in_one_kv_value_and_refuses_more() {
    let mut list = BlockList::new();
    let report = list.import_text(&generated_ids(MAX_ENTRIES + 2), 1_700_000_000_000);
    assert_eq!(report.added, MAX_ENTRIES);
    assert_eq!(report.errors.len(), 2);
    assert!(report
        .errors
        .iter()
        .all(|e| e.error == EntryError::ListFull));
    assert_eq!(
        list.add(Entry::parse("@one:more.org", None, 0).unwrap()),
        AddOutcome::Full
    );
    let json = list.to_json().unwrap();
    assert!(json.len() < 25 * 1024 * 1024, "{} bytes", json.len());
}

#[test]
fn huge_entries_fill_the_byte_budget_before_the_count() {
    let mut list = BlockList::new();
    let reason = "r".repeat(MAX_REASON_BYTES);
    let lines: String = (0..17_000)
        .map(|i| format!("@{}{i:06}:x.org # {reason}\n", "a".repeat(200)))
        .collect();
    let report = list.import_text(&lines, 0);
    assert!(report.added < 17_000);
    assert!(report
        .errors
        .iter()
        .all(|e| e.error == EntryError::ListFull));
    assert!(list.to_json().unwrap().len() <= MAX_DOCUMENT_BYTES);
}

#[test]
fn a_large_index_agrees_with_the_reference_on_near_misses() {
    let mut list = BlockList::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let syllables = [
        "tro", "ll", "ki", "ng", "al", "ice", "mo", "der", "at", "or", "sp", "am", "x",
    ];
    let mut name = |len: u64| -> String {
        (0..2 + len)
            .map(|_| syllables[(next() % syllables.len() as u64) as usize])
            .collect()
    };
    let text: String = (0..2000)
        .map(|i| format!("@{}:s{}.org\n", name(i % 5), i % 7))
        .collect();
    list.import_text(&text, 0);
    let index = list.index();
    let scan = LinearScan::new(&list.entries);
    let (mut hits, mut near) = (0, 0);
    for i in 0..600u64 {
        let id = user(&format!("@{}:other.org", name(i % 5)));
        let got = index.check_user(&id);
        hits += usize::from(got.is_some());
        near += usize::from(
            got.as_ref()
                .is_some_and(|v| matches!(v.rule, MatchRule::Distance(_))),
        );
        assert_eq!(got, scan.check_user(&id), "{id}");
    }
    assert!(hits > 50 && near > 10, "{hits} hits, {near} near misses");
    assert!(index.stats().near_miss_postings > 0);
}

const LEET: &[(char, char)] = &[
    ('a', '4'),
    ('b', '8'),
    ('e', '3'),
    ('g', '9'),
    ('i', '1'),
    ('l', '1'),
    ('o', '0'),
    ('s', '5'),
    ('t', '7'),
    ('z', '2'),
];
const SEPARATORS: &[char] = &['.', '_', '-', '=', '/', '+'];

/// A documented evasion of `base`: leet substitution, letter repetition, separators, a numeric
/// prefix and suffix, random case. A leet digit may touch a counter only if it is the one digit
/// next to the letters (two leet digits glued to a counter are unreadable, see `normalize`).
fn evade(base: &str, picks: &[u8], prefix: &str, suffix: &str) -> String {
    let mut pick = picks.iter().copied().cycle();
    let n = base.chars().count();
    let mut chars: Vec<char> = base
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let guarded = (i == 1 && !prefix.is_empty()) || (i + 2 == n && !suffix.is_empty());
            match LEET.iter().find(|(l, _)| *l == c) {
                Some(&(_, d)) if !guarded && pick.next().unwrap_or(0) % 3 == 0 => d,
                _ => c,
            }
        })
        .collect();
    let at = pick.next().unwrap_or(0) as usize % chars.len();
    let times = pick.next().unwrap_or(0) as usize % 4;
    for _ in 0..times {
        chars.insert(at, chars[at]);
    }
    let mut out = String::from(prefix);
    for c in chars {
        let p = pick.next().unwrap_or(0);
        if p % 4 == 0 {
            out.push(SEPARATORS[p as usize % SEPARATORS.len()]);
        }
        if pick.next().unwrap_or(0) % 2 == 0 {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c);
        }
    }
    out.push_str(suffix);
    out
}

fn id_entry() -> impl Strategy<Value = Entry> {
    let local = prop_oneof![
        "[trolkia0-9._]{1,10}",
        "[a-f]{8,14}",
        "[a-z]{2,6}[0-9]{0,3}",
    ];
    let server = prop_oneof![Just("a.org"), Just("b.org"), Just("evil.example")];
    prop_oneof![
        6 => (local, server).prop_map(|(l, s)| format!("@{l}:{s}")),
        1 => ("[trolka]{1,4}", prop_oneof![Just("*:*"), Just("?:a.org"), Just("*:b.org")])
            .prop_map(|(l, s)| format!("@{l}{s}")),
        1 => ("[a-z]{2,4}", prop_oneof![Just("*:"), Just("*")]).prop_map(|(l, s)| format!("{s}{l}.org")),
        1 => "[trolk]{2,4}".prop_map(|l| format!("*{l}*")),
    ]
    .prop_filter_map("valid entry", |p| Entry::parse(&p, None, 0).ok())
}

fn name_entry() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("A"),
            Just("l"),
            Just("i"),
            Just("c"),
            Just("e"),
            Just(" "),
            Just("\u{430}"),
            Just("1"),
            Just("\u{ff21}"),
            Just("m"),
            Just("rn"),
            Just("d"),
            Just("n"),
            Just("0"),
            Just("o"),
        ],
        1..14,
    )
    .prop_map(|parts| parts.concat())
}

fn candidate_id() -> impl Strategy<Value = UserId> {
    (
        prop_oneof![
            "[trolkia0-9._]{1,10}",
            "[a-f]{7,15}",
            "[a-z]{2,6}[0-9]{0,3}"
        ],
        prop_oneof![
            Just("a.org"),
            Just("b.org"),
            Just("evil.example"),
            Just("c.net")
        ],
    )
        .prop_map(|(l, s)| user(&format!("@{l}:{s}")))
}

fn mutate(local: &str, edits: &[(u8, u8, char)]) -> String {
    let mut chars: Vec<char> = local.chars().collect();
    for &(op, at, c) in edits {
        if chars.is_empty() {
            chars.push(c);
            continue;
        }
        let at = at as usize % chars.len();
        match op % 4 {
            0 => chars.insert(at, c),
            1 => {
                chars.remove(at);
            }
            2 => chars[at] = c,
            _ if at + 1 < chars.len() => chars.swap(at, at + 1),
            _ => {}
        }
    }
    let s: String = chars.into_iter().collect();
    if s.is_empty() {
        "x".into()
    } else {
        s
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_documented_variant_of_a_blocked_name_is_caught(
        base in "[a-z]{3,12}",
        picks in proptest::collection::vec(any::<u8>(), 8..40),
        prefix in "[0-9]{0,4}",
        suffix in "[0-9]{0,4}",
        server in prop_oneof![Just("localhost"), Just("other.example"), Just("b.org:8448")],
    ) {
        // Keys under three letters reach only their exact ID by default; the folding is what is
        // tested here, so the entry asks for its family.
        let entry = Entry::parse(&format!("@{base}:localhost"), None, 0).unwrap();
        let index = BlockIndex::build(vec![entry.with_reach(Some(Reach::Family))]);
        let variant = format!("@{}:{server}", evade(&base, &picks, &prefix, &suffix));
        let verdict = index.check_user(&user(&variant));
        prop_assert!(
            verdict.as_ref().is_some_and(|v| matches!(v.rule, MatchRule::Exact | MatchRule::Family)),
            "{} not caught: {:?} vs {:?}",
            variant,
            family_readings(&variant[1..variant.find(':').unwrap()]),
            family_key(&base)
        );
    }

    #[test]
    fn family_keys_are_idempotent(s in "\\PC{0,20}", t in "[a-zA-Z0-9._=/+$@|! -]{0,20}") {
        prop_assert_eq!(family_key(&family_key(&s)), family_key(&s));
        prop_assert_eq!(family_key(&family_key(&t)), family_key(&t));
        for r in family_readings(&t) {
            prop_assert_eq!(family_key(&r), r.clone(), "reading {}", r);
        }
    }

    #[test]
    fn folded_free_text_is_idempotent(s in "\\PC{0,24}") {
        let once = fold_free_text(&s);
        prop_assert_eq!(fold_free_text(&once), once.clone());
        let key = family_key(&once);
        prop_assert_eq!(family_key(&fold_free_text(&key)), key);
    }

    #[test]
    fn the_index_agrees_with_the_linear_reference(
        ids in proptest::collection::vec(id_entry(), 0..40),
        names in proptest::collection::vec(name_entry(), 0..6),
        candidates in proptest::collection::vec(candidate_id(), 1..16),
        near in proptest::collection::vec(
            (any::<usize>(), proptest::collection::vec((any::<u8>(), any::<u8>(), prop_oneof![Just('a'), Just('x'), Just('1'), Just('o')]), 0..4)),
            0..16,
        ),
        display in proptest::collection::vec(name_entry(), 1..8),
        cut in any::<usize>(),
    ) {
        let mut entries = ids;
        entries.extend(names.iter().filter_map(|n| Entry::display_name(n, None, 0).ok()));
        let index = BlockIndex::build(entries.clone());
        // The same list published as a base and the entries added since, layered.
        let cut = cut % (entries.len() + 1);
        let layered = BlockIndex::over(
            std::rc::Rc::new(BlockIndex::build(entries[..cut].to_vec())),
            BlockIndex::build(entries[cut..].to_vec()),
        )
        .unwrap();
        prop_assert_eq!(layered.len(), entries.len());
        let scan = LinearScan::new(&entries);
        let locals: Vec<String> = entries
            .iter()
            .filter(|e| e.kind == EntryKind::UserId)
            .map(|e| e.pattern[1..e.pattern.find(':').unwrap_or(1)].to_owned())
            .collect();
        let mut users = candidates;
        for (pick, edits) in &near {
            if let Some(local) = locals.get(pick % locals.len().max(1)) {
                let mutated: String = mutate(local, edits)
                    .chars()
                    .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                    .collect();
                if let Ok(id) = UserId::parse(&format!("@{mutated}:c.net")) {
                    users.push(id);
                }
            }
        }
        for u in &users {
            prop_assert_eq!(index.check_user(u), scan.check_user(u), "user {}", u);
            prop_assert_eq!(layered.check_user(u), index.check_user(u), "layered at {}: user {}", cut, u);
        }
        for n in display.iter().chain(names.iter()) {
            prop_assert_eq!(index.check_display_name(n), scan.check_display_name(n), "name {:?}", n);
            prop_assert_eq!(layered.check_display_name(n), index.check_display_name(n), "layered at {}: name {:?}", cut, n);
        }
    }
}

#[test]
fn a_layered_index_counts_entries_across_both_and_keeps_the_layers_exceptions() {
    let parse = |p: &str| Entry::parse(p, Some("spam".into()), 0).unwrap();
    let base = BlockIndex::build_full(
        &[parse("@spammer:evil.example"), parse("@*:spam.example")],
        &[Allow {
            user_id: "@old:x.org".into(),
            reason: None,
            added_at: 0,
        }],
        Policy::default(),
    );
    let added = BlockIndex::build_full(
        &[parse("@trollking:localhost")],
        &[Allow {
            user_id: "@new:x.org".into(),
            reason: Some("known".into()),
            added_at: 0,
        }],
        Policy::default(),
    );
    let layered = BlockIndex::over(std::rc::Rc::new(base), added).unwrap();
    assert_eq!(layered.len(), 3);
    assert_eq!(
        layered.entry(2).map(|e| e.pattern),
        Some("@trollking:localhost".into())
    );
    assert_eq!(
        layered.entry(0).map(|e| e.pattern),
        Some("@spammer:evil.example".into())
    );
    assert_eq!(layered.entry(3), None);
    // A verdict of the layer names the entry's place in the whole list.
    let v = layered.check_user(&user("@tr0llking:kde.org")).unwrap();
    assert_eq!((v.index, v.outcome()), (2, Outcome::Block));
    let v = layered.check_user(&user("@anyone:spam.example")).unwrap();
    assert_eq!((v.index, v.rule), (1, MatchRule::Glob));
    // The layer holds the list's whole set of exceptions.
    assert_eq!(layered.allowed("@new:x.org"), Some("known".into()));
    assert_eq!(layered.allowed("@old:x.org"), None);
    assert!(layered.check_all().is_ok());
    assert_eq!(layered.stats().entries, 3);
    // Layers of other settings, or a layer over a layer, are refused.
    let strict = Policy {
        shared_counter_min_digits: 0,
        ..Policy::default()
    };
    let other = BlockIndex::build_with(vec![parse("@a:x.org")], strict);
    assert!(BlockIndex::over(
        std::rc::Rc::new(BlockIndex::build(vec![parse("@b:x.org")])),
        other
    )
    .is_err());
    let again = BlockIndex::over(std::rc::Rc::new(layered), BlockIndex::build(vec![]));
    assert!(again.is_err());
}

// ---------------------------------------------------------------------------------------------
// Graded verdicts, reach, preview

fn graded(list: &[&str]) -> BlockIndex {
    BlockIndex::build(
        list.iter()
            .map(|p| Entry::parse(p, Some("ban evasion".into()), 0).unwrap())
            .collect(),
    )
}

fn outcome(index: &BlockIndex, id: &str) -> Outcome {
    index
        .check_user(&user(id))
        .map_or(Outcome::Allow, |v| v.outcome())
}

#[test]
fn a_counter_only_variant_of_a_common_name_is_held_not_blocked() {
    let index = graded(&["@matthew41:matrix.org"]);
    for namesake in [
        "@matthew70:kde.org",
        "@mathew59:kde.org",
        "@matthew:kde.org",
    ] {
        let v = index.check_user(&user(namesake)).unwrap();
        assert_eq!(v.outcome(), Outcome::Hold, "{namesake}");
        assert!(
            matches!(v.grade.why, Why::CommonName { per_million } if per_million >= 1_000),
            "{namesake}: {:?}",
            v.grade
        );
    }
}

#[test]
fn the_same_counter_or_digits_for_letters_block_even_on_a_common_name() {
    let index = graded(&["@matthew41:matrix.org"]);
    let why = |id: &str| {
        index
            .check_user(&user(id))
            .map(|v| (v.outcome(), v.grade.why))
    };
    assert_eq!(
        why("@mathew41:kde.org"),
        Some((Outcome::Block, Why::SameCounter))
    );
    assert_eq!(
        why("@matthew41:kde.org"),
        Some((Outcome::Block, Why::SameCounter))
    );
    assert_eq!(why("@m4tthew70:kde.org"), Some((Outcome::Block, Why::Leet)));
    assert_eq!(
        why("@matt.hew41:kde.org"),
        Some((Outcome::Block, Why::SameCounter))
    );
}

#[test]
fn michele_is_held_for_michelle_and_one_letter_of_an_initial_is_held() {
    let index = graded(&["@michelle38:matrix.org", "@vgautier:matrix.org"]);
    assert_eq!(outcome(&index, "@michele65:kde.org"), Outcome::Hold);
    let v = index.check_user(&user("@zgautier:kde.org")).unwrap();
    assert_eq!(
        (v.outcome(), v.grade.why, v.rule),
        (Outcome::Hold, Why::FirstLetter, MatchRule::Distance(1))
    );
    // Another initial and another counter: two things differ, still held...
    let index = graded(&[
        "@bolzmann21:matrix.org",
        "@helena33:matrix.org",
        "@vgautier:x.org",
        "@dominique98:x.org",
    ]);
    for id in [
        "@sbolzmann83:kde.org",
        "@zgautier12:kde.org",
        "@ldominique71:kde.org",
    ] {
        let v = index.check_user(&user(id)).unwrap();
        assert_eq!(
            (v.outcome(), v.grade.why),
            (Outcome::Hold, Why::CounterToo),
            "{id}"
        );
    }
    // ...unless the near miss is a common name or handle of its own (an initial and a common
    // surname), or has no counter (an initial and a surname beside the surname with digits):
    // likelier two people.
    let index = graded(&[
        "@helena33:matrix.org",
        "@walker99:matrix.org",
        "@henck21:x.org",
    ]);
    for id in ["@elena05:kde.org", "@cwalker:kde.org", "@ahenck:kde.org"] {
        let v = index.check_user(&user(id));
        assert!(v.is_none(), "{id}: {:?}", v.map(|v| v.explain()));
    }
}

#[test]
fn a_near_miss_of_a_five_letter_name_is_held_not_blocked() {
    let index = graded(&["@troll:example.org"]);
    for id in ["@trolls:x.org", "@stroll:x.org"] {
        assert_eq!(outcome(&index, id), Outcome::Hold, "{id}");
    }
    // A four-letter name's near misses still count only with the same counter.
    let index = graded(&["@trol:example.org", "@mira7:example.org"]);
    assert_eq!(outcome(&index, "@trols:x.org"), Outcome::Allow);
    assert_eq!(outcome(&index, "@mirna3:x.org"), Outcome::Allow);
}

#[test]
fn a_given_name_and_another_initial_reads_as_another_person() {
    // Only the last letter differs after a given name: an initial, held like a first one...
    let index = graded(&["@osamun:x.org", "@akemi1969:x.org", "@annas37:x.org"]);
    let v = index.check_user(&user("@osamum:kde.org")).unwrap();
    assert_eq!(
        (v.outcome(), v.grade.why, v.rule),
        (Outcome::Hold, Why::LastLetter, MatchRule::Distance(1))
    );
    assert!(
        v.explain().contains("only the last letter differs"),
        "{}",
        v.explain()
    );
    // ...and with a number of its own as well, or none beside a year, no evidence at all.
    for id in [
        "@osamum42:kde.org",
        "@akemim22:kde.org",
        "@akemim:kde.org",
        "@annak3:kde.org",
    ] {
        let v = index.check_user(&user(id));
        assert!(v.is_none(), "{id}: {:?}", v.map(|v| v.explain()));
    }
    // The same counter still holds, and leet still blocks.
    assert_eq!(outcome(&index, "@annak37:kde.org"), Outcome::Hold);
    assert_eq!(outcome(&index, "@ann4s37:kde.org"), Outcome::Block);
}

#[test]
fn a_surname_and_another_initial_is_held_not_blocked() {
    // Only the last letter differs after a surname: another initial, held like a first one.
    let index = graded(&[
        "@musilova_j:x.org",
        "@kowalczykm:x.org",
        "@hardiansyahh:x.org",
    ]);
    for (id, blocked) in [
        ("@musilova_n:kde.org", "@musilova_j:x.org"),
        ("@musilova.t:x.org", "@musilova_j:x.org"),
        ("@kowalczyka:kde.org", "@kowalczykm:x.org"),
        // The initial doubles the surname's last letter: still another initial, as spelled.
        ("@hardiansyah-b:kde.org", "@hardiansyahh:x.org"),
    ] {
        let v = index.check_user(&user(id)).unwrap();
        assert_eq!(
            (v.outcome(), v.grade.why, v.rule),
            (Outcome::Hold, Why::EndLetter, MatchRule::Distance(1)),
            "{id}"
        );
        let text = v.explain();
        assert!(
            text.contains(blocked) && text.contains("only the last letter (an initial?) differs"),
            "{text}"
        );
    }
    // Anything else about the name still blocks: another letter inside it, the last letter
    // dropped, leet, the ID itself.
    for id in [
        "@musilava_j:kde.org",
        "@musilova_jj:kde.org",
        "@mus1lova_j:kde.org",
        "@musilova_j:x.org",
    ] {
        assert_eq!(outcome(&index, id), Outcome::Block, "{id}");
    }
    // The surname alone, a common one, is a name of its own (as before).
    assert_eq!(outcome(&index, "@kowalczyk:kde.org"), Outcome::Allow);
}

#[test]
fn one_shared_digit_is_no_evidence_for_a_common_name_of_its_own() {
    let index = graded(&["@nina8:x.org", "@nina88:x.org"]);
    assert!(index.check_user(&user("@tina8:kde.org")).is_none());
    let v = index.check_user(&user("@tina88:kde.org")).unwrap();
    assert_eq!(v.grade.why, Why::OtherName { per_million: 8192 });
    let strict = Policy {
        shared_counter_min_digits: 0,
        ..Policy::default()
    };
    let index =
        BlockIndex::build_with(vec![Entry::parse("@nina8:x.org", None, 0).unwrap()], strict);
    assert_eq!(outcome(&index, "@tina8:kde.org"), Outcome::Hold);
}

#[test]
fn a_double_letter_at_either_end_is_an_initial_meeting_a_name() {
    // `jjohnson` is j. Johnson and `atsushii` is Atsushi I., not the common name alone, so they
    // keep near misses (held, the names being common); `johnson` reaches its family only.
    let index = graded(&["@jjohnson:x.org", "@atsushii:x.org", "@johnson:x.org"]);
    let reaches: Vec<Option<Reach>> = (0..3).map(|i| index.reach_of(i)).collect();
    assert_eq!(
        reaches,
        [Some(Reach::Fuzzy), Some(Reach::Fuzzy), Some(Reach::Family)]
    );
    assert_eq!(outcome(&index, "@jjohnsjn:kde.org"), Outcome::Hold);
    assert_eq!(outcome(&index, "@atsushci:kde.org"), Outcome::Hold);
    assert_eq!(outcome(&index, "@johnsen:kde.org"), Outcome::Allow);
}

#[test]
fn a_near_miss_is_as_long_as_its_spelling_and_two_edits_with_another_counter_are_nothing() {
    // `meesk` has five letters though its family key `mesk` has four: its near misses count.
    let index = graded(&["@meesk:x.org", "@sofiajones729:x.org"]);
    let v = index.check_user(&user("@mecsk:kde.org")).unwrap();
    assert_eq!(
        (v.outcome(), v.grade.why),
        (Outcome::Hold, Why::ShortKey { chars: 5 })
    );
    assert!(index.check_user(&user("@sonyajones77:kde.org")).is_none());
    assert_eq!(outcome(&index, "@sonyajones729:kde.org"), Outcome::Block);
}

#[test]
fn a_distinctive_name_blocks_under_leet_separators_repeats_and_near_misses() {
    let index = graded(&["@trollking:localhost"]);
    for evader in [
        "@tr0llk1ng:matrix.org",
        "@tr0llk1ng2024:matrix.org",
        "@troll.king:matrix.org",
        "@trooollking:matrix.org",
        "@trollkin:matrix.org",
        "@trollkign:matrix.org",
    ] {
        assert_eq!(outcome(&index, evader), Outcome::Block, "{evader}");
    }
    assert_eq!(outcome(&index, "@trolley:matrix.org"), Outcome::Allow);
}

#[test]
fn a_counter_only_variant_is_held_even_on_a_name_the_table_does_not_know() {
    // `kuhnert` and `bolzmann` are real surnames missing from the table (its tail is cut), as
    // absent as the invented `trollking`: only the counter differs, so a namesake may be behind it.
    let index = graded(&[
        "@trollking:localhost",
        "@kuhnert09:localhost",
        "@bolzmann21:localhost",
    ]);
    for (id, key) in [
        ("@trollking2024:matrix.org", "troiking"),
        ("@kuhnert44:kde.org", "kuhnert"),
        ("@kuhnert:kde.org", "kuhnert"),
        ("@bolzmann9:kde.org", "boizman"),
    ] {
        let v = index.check_user(&user(id)).unwrap();
        assert_eq!(v.outcome(), Outcome::Hold, "{id}");
        assert!(
            matches!(v.grade.why, Why::Namesake { per_million } if per_million < 32),
            "{id}: {:?}",
            v.grade
        );
        assert!(
            v.explain().contains(&format!(
                "held for a moderator, not blocked: only the counter differs, and even a rare \
                 name like {key} ("
            )),
            "{}",
            v.explain()
        );
    }
    // The same counter, or only the spelling, still blocks.
    assert_eq!(outcome(&index, "@kuhnert09:kde.org"), Outcome::Block);
    assert_eq!(outcome(&index, "@kuh.nert09:kde.org"), Outcome::Block);
    assert_eq!(outcome(&index, "@troll_king:kde.org"), Outcome::Block);
}

#[test]
fn the_counter_setting_can_block_counter_only_variants_of_rare_names_again() {
    let old = Policy {
        hold_counter_per_million: 32,
        ..Policy::default()
    };
    let entries = vec![Entry::parse("@kuhnert09:localhost", None, 0).unwrap()];
    let index = BlockIndex::build_with(entries.clone(), old);
    let v = index.check_user(&user("@kuhnert44:kde.org")).unwrap();
    assert_eq!(v.outcome(), Outcome::Block);
    assert!(matches!(v.grade.why, Why::Distinctive { .. }));
    let scan = LinearScan::with_policy(&entries, old);
    let id = user("@kuhnert44:kde.org");
    assert_eq!(index.check_user(&id), scan.check_user(&id));
}

#[test]
fn near_misses_of_a_short_name_count_only_with_the_same_counter() {
    let index = graded(&["@anna83:x.org"]);
    // The same number, one letter off: an evasion, held when it is another common name.
    assert_eq!(outcome(&index, "@annq83:kde.org"), Outcome::Block);
    assert_eq!(outcome(&index, "@anan83:kde.org"), Outcome::Hold);
    // Another name and another number: nothing to go on.
    assert_eq!(outcome(&index, "@anja17:kde.org"), Outcome::Allow);
    assert_eq!(outcome(&index, "@annq17:kde.org"), Outcome::Allow);
}

#[test]
fn two_different_common_names_a_letter_apart_are_two_people() {
    let index = graded(&["@karolina:x.org", "@maria72:x.org"]);
    assert_eq!(outcome(&index, "@karoline:kde.org"), Outcome::Allow);
    assert_eq!(outcome(&index, "@daria72x:kde.org"), Outcome::Allow);
}

#[test]
fn the_strongest_outcome_wins_over_an_earlier_weaker_match() {
    // Entry 0 only holds @zork5 (another counter on a short key); entry 1 blocks it (one edit
    // and the same counter).
    let index = graded(&["@zork:matrix.org", "@zorks5:matrix.org"]);
    let v = index.check_user(&user("@zork5:kde.org")).unwrap();
    assert_eq!((v.index, v.outcome()), (1, Outcome::Block));
}

#[test]
fn a_hold_explains_why_it_is_not_a_block() {
    let index = graded(&["@matthew41:matrix.org", "@vgautier:matrix.org"]);
    assert_eq!(
        index
            .check_user(&user("@matthew70:kde.org"))
            .unwrap()
            .explain(),
        "@matthew70:kde.org matches blocked @matthew41:matrix.org (family: both read as mathew); \
         held for a moderator, not blocked: only the counter or spelling differs, and mathew is a \
         common name (about 4 in a thousand); reason: ban evasion"
    );
    assert_eq!(
        index
            .check_user(&user("@zgautier:kde.org"))
            .unwrap()
            .explain(),
        "@zgautier:kde.org matches blocked @vgautier:matrix.org (near miss: zgautier is 1 edit \
         from vgautier); held for a moderator, not blocked: only the first letter (an initial?) \
         differs; reason: ban evasion"
    );
    // A block says nothing more than before.
    assert!(!index
        .check_user(&user("@m4tthew41:kde.org"))
        .unwrap()
        .explain()
        .contains("held"));
}

#[test]
fn an_approved_knock_is_stopped_only_by_block_level_evidence() {
    assert_eq!(Outcome::Hold.for_knock(true), Outcome::Allow);
    assert_eq!(Outcome::Hold.for_knock(false), Outcome::Hold);
    assert_eq!(Outcome::Block.for_knock(true), Outcome::Block);
    assert_eq!(Outcome::Allow.for_knock(false), Outcome::Allow);
    assert_eq!(Outcome::Block.for_member(), MemberAction::Remove);
    assert_eq!(Outcome::Hold.for_member(), MemberAction::Report);
    assert_eq!(Outcome::Allow.for_member(), MemberAction::Keep);
    assert!(Outcome::Allow < Outcome::Hold && Outcome::Hold < Outcome::Block);
}

#[test]
fn reach_bounds_which_rules_apply_to_an_entry() {
    let entry = |reach| {
        Entry::parse("@trollking:localhost", None, 0)
            .unwrap()
            .with_reach(Some(reach))
    };
    let check = |reach, id: &str| {
        BlockIndex::build(vec![entry(reach)])
            .check_user(&user(id))
            .map(|v| v.rule)
    };
    assert_eq!(
        check(Reach::Exact, "@trollking:localhost"),
        Some(MatchRule::Exact)
    );
    assert_eq!(check(Reach::Exact, "@trollking:other.org"), None);
    assert_eq!(
        check(Reach::Family, "@tr0llking:other.org"),
        Some(MatchRule::Family)
    );
    assert_eq!(check(Reach::Family, "@trollkin:other.org"), None);
    assert_eq!(
        check(Reach::Fuzzy, "@trollkin:other.org"),
        Some(MatchRule::Distance(1))
    );
}

#[test]
fn the_default_reach_follows_how_distinctive_the_name_is() {
    let index = graded(&[
        "@al:x.org",
        "@al7:x.org",
        "@anna:x.org",
        "@anna83:x.org",
        "@trollking:x.org",
        "@annaschmidt:x.org",
        "@spam*:*",
    ]);
    let reaches: Vec<Option<Reach>> = (0..8).map(|i| index.reach_of(i)).collect();
    assert_eq!(
        reaches,
        [
            Some(Reach::Exact),
            Some(Reach::Fuzzy),
            Some(Reach::Family),
            Some(Reach::Fuzzy),
            Some(Reach::Fuzzy),
            Some(Reach::Fuzzy),
            Some(Reach::Exact),
            None
        ]
    );
    assert_eq!(
        outcome(&graded(&["@al:x.org"]), "@a.l:y.org"),
        Outcome::Allow
    );
    assert_eq!(
        outcome(&graded(&["@al7:x.org"]), "@a.l7:y.org"),
        Outcome::Block
    );
}

#[test]
fn reach_is_stored_with_the_entry_and_old_entries_read_without_one() {
    let mut list = BlockList::new();
    list.add(
        Entry::parse("@troll:x.org", None, 5)
            .unwrap()
            .with_reach(Some(Reach::Exact)),
    );
    list.add(Entry::parse("@bob:x.org", None, 5).unwrap());
    let json = list.to_json().unwrap();
    assert_eq!(
        json,
        r#"{"version":2,"entries":[{"pattern":"@troll:x.org","kind":"user_id","added_at":5,"reach":"exact"},{"pattern":"@bob:x.org","kind":"user_id","added_at":5}]}"#
    );
    assert_eq!(BlockList::from_json(&json).unwrap(), list);
    let old =
        r#"{"version":1,"entries":[{"pattern":"@troll:x.org","kind":"user_id","added_at":5}]}"#;
    assert_eq!(BlockList::from_json(old).unwrap().entries[0].reach, None);
    let mut imported = BlockList::new();
    imported.import_json(&json, 9).unwrap();
    assert_eq!(imported.entries, list.entries);
    assert!(BlockList::from_json(
        r#"{"entries":[{"pattern":"@a:x.org","kind":"user_id","reach":"far"}]}"#
    )
    .is_err());
}

#[test]
fn an_entry_request_has_the_shape_of_block_users_body_with_an_optional_reach() {
    let req: EntryRequest =
        serde_json::from_str(r#"{"user_id":"@Troll:x.org","reason":"spam","reach":"family"}"#)
            .unwrap();
    let e = req.to_entry(7).unwrap();
    assert_eq!(
        (e.pattern.as_str(), e.reach, e.added_at),
        ("@troll:x.org", Some(Reach::Family), 7)
    );
    let name: EntryRequest =
        serde_json::from_str(r#"{"user_id":"Alice Admin","display_name":true}"#).unwrap();
    assert_eq!(name.to_entry(0).unwrap().kind, EntryKind::DisplayName);
    let bad: EntryRequest = serde_json::from_str(r#"{"user_id":"not an id"}"#).unwrap();
    assert!(bad.to_entry(0).is_err());
}

#[test]
fn preview_lists_who_an_entry_would_catch_with_outcome_and_reason() {
    let entry = Entry::parse("@matthew41:matrix.org", Some("spam".into()), 0).unwrap();
    let knocks = [
        user("@m4tthew41:kde.org"),
        user("@matthew70:kde.org"),
        user("@bob:kde.org"),
    ];
    let members = [
        (user("@mathew41:x.org"), Some("Mathew".to_owned())),
        (user("@alice:x.org"), None),
    ];
    let p = preview(&entry, &knocks, &members, &Policy::default());
    assert_eq!((p.reach, p.blocked, p.held), (Reach::Fuzzy, 2, 1));
    let who: Vec<(Seen, &str, Outcome)> = p
        .caught
        .iter()
        .map(|c| (c.seen, c.user_id.as_str(), c.outcome))
        .collect();
    assert_eq!(
        who,
        [
            (Seen::Knock, "@m4tthew41:kde.org", Outcome::Block),
            (Seen::Member, "@mathew41:x.org", Outcome::Block),
            (Seen::Knock, "@matthew70:kde.org", Outcome::Hold),
        ]
    );
    assert!(p.caught[2].explanation.contains("held for a moderator"));
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["caught"][0]["outcome"], "block");
    assert_eq!(json["caught"][0]["rule"], "family");
    assert_eq!(json["reach"], "fuzzy");

    let name = Entry::display_name("Alice Admin", None, 0).unwrap();
    let members = [(user("@x:y.org"), Some("\u{410}lice Admin".to_owned()))];
    let p = preview(&name, &[], &members, &Policy::default());
    assert_eq!((p.blocked, p.caught[0].seen), (1, Seen::Member));
}

#[test]
fn policy_settings_have_defaults_and_refuse_bad_values_by_name() {
    assert_eq!(Policy::from_vars(|_| None), Ok(Policy::default()));
    assert_eq!(SETTINGS.len(), 7);
    let vars = |name: &str| match name {
        "BLOCKLIST_HOLD_COMMON_PER_MILLION" => Some("50".to_owned()),
        "BLOCKLIST_HOLD_EDITS" => Some(" 3 ".to_owned()),
        _ => None,
    };
    let p = Policy::from_vars(vars).unwrap();
    assert_eq!((p.hold_common_per_million, p.hold_edits), (50, 3));
    let bad = |name: &str| match name {
        "BLOCKLIST_BLOCK_MIN_CHARS" => Some("five".to_owned()),
        "BLOCKLIST_HOLD_EDITS" => Some("0".to_owned()),
        _ => None,
    };
    let errors = Policy::from_vars(bad).unwrap_err();
    let names: Vec<&str> = errors.iter().map(|e| e.name).collect();
    assert_eq!(names, ["BLOCKLIST_BLOCK_MIN_CHARS", "BLOCKLIST_HOLD_EDITS"]);
    assert!(errors[0].to_string().contains("whole number"));
    // Every setting's documented default is the default.
    let defaults = |name: &str| {
        SETTINGS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, d, _)| d.to_string())
    };
    assert_eq!(Policy::from_vars(defaults), Ok(Policy::default()));
}

#[test]
fn a_stricter_policy_blocks_what_the_default_holds() {
    let strict = Policy {
        hold_common_per_million: 1_000_000,
        hold_counter_per_million: 1_000_000,
        ..Policy::default()
    };
    let entries = vec![Entry::parse("@matthew41:matrix.org", None, 0).unwrap()];
    let index = BlockIndex::build_with(entries.clone(), strict);
    assert_eq!(outcome(&index, "@matthew70:kde.org"), Outcome::Block);
    let scan = LinearScan::with_policy(&entries, strict);
    let id = user("@matthew70:kde.org");
    assert_eq!(index.check_user(&id), scan.check_user(&id));
}

#[test]
fn an_edge_digit_read_as_a_letter_is_no_evidence_when_both_counters_differ() {
    // `paul48` is Paul with 48, not Paula with 8: two names, two numbers.
    let index = graded(&["@paula79:x.org", "@mir078:x.org", "@eileen46:x.org"]);
    for id in ["@paul48:kde.org", "@miro71:kde.org", "@elena05:kde.org"] {
        let v = index.check_user(&user(id));
        assert!(v.is_none(), "{id}: {:?}", v.map(|v| v.explain()));
    }
    // The same counter, digits inside the name, or a blocked name with no counter still count.
    assert_eq!(outcome(&index, "@paul479:kde.org"), Outcome::Block);
    assert_eq!(outcome(&index, "@p4ul48:kde.org"), Outcome::Block);
    let index = graded(&["@alice:x.org"]);
    assert_ne!(outcome(&index, "@alic3_01:kde.org"), Outcome::Allow);
}

#[test]
fn the_index_finds_a_later_entry_without_a_counter_behind_an_earlier_one_with_another() {
    // The earlier `paula79` is no evidence against `paul48`; the later `paula` is (held).
    let entries: Vec<Entry> = ["@paula79:x.org", "@paula:x.org"]
        .iter()
        .map(|p| Entry::parse(p, None, 0).unwrap())
        .collect();
    let index = BlockIndex::build(entries.clone());
    let scan = LinearScan::new(&entries);
    let id = user("@paul48:kde.org");
    let v = index.check_user(&id).unwrap();
    assert_eq!((v.index, v.outcome()), (1, Outcome::Hold));
    assert_eq!(Some(v), scan.check_user(&id));
}

// ---- the compiled index: the stored form every isolate opens ----

fn candidates() -> Vec<UserId> {
    [
        "@trollking:localhost",
        "@tr0llk1ng:other.example",
        "@trollkin:localhost",
        "@trollking99:localhost",
        "@troll:example.org",
        "@alice:example.org",
        "@a1ice:example.org",
        "@spammer:example.org",
        "@x:evil.example",
        "@x:a.evil.example",
        "@bot-42:example.org",
        "@christopherrobin:example.org",
        "@christophe_robin:example.org",
        "@someone:example.org",
        "@trolley:example.org",
    ]
    .iter()
    .map(|s| user(s))
    .collect()
}

fn answers(index: &BlockIndex) -> Vec<Option<(Outcome, String)>> {
    candidates()
        .iter()
        .map(|u| {
            index
                .judge(u, Some("Alice Admin"))
                .map(|v| (v.outcome(), v.explain()))
        })
        .collect()
}

#[test]
fn a_compiled_index_opens_and_answers_as_the_list_does() {
    let entries = fixture();
    let policy = Policy::default();
    let blob = BlockIndex::compile(&entries, &[], &policy);
    let opened = BlockIndex::open(blob.clone(), &policy).expect("opens");
    opened.check_all().expect("every page intact");
    assert_eq!(opened.len(), entries.len());
    assert_eq!(opened.size(), blob.len());
    // Every answer matches the reference matcher's, which reads the entries themselves.
    let scan = LinearScan::new(&entries);
    for u in candidates() {
        assert_eq!(
            opened.check_user(&u).map(|v| (v.outcome(), v.explain())),
            scan.check_user(&u).map(|v| (v.outcome(), v.explain())),
            "{u}"
        );
    }
    assert!(answers(&opened).iter().any(Option::is_some));
    // Entries read back whole, reasons and reach included.
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(opened.entry(i).as_ref(), Some(e));
    }
    assert!(!opened.damaged());
    // Nor is an index without display names (or without any entry) taken for a damaged one.
    for list in [vec![], entries[..2].to_vec()] {
        let index = BlockIndex::build_with(list, policy);
        for u in candidates() {
            index.judge(&u, Some("Alice Admin"));
        }
        assert!(!index.damaged());
    }
    // The same list compiles to the same bytes.
    assert_eq!(BlockIndex::compile(&entries, &[], &policy), blob);
}

#[test]
fn a_compiled_index_is_refused_under_other_settings_or_another_format() {
    let entries = fixture();
    let policy = Policy::default();
    let blob = BlockIndex::compile(&entries, &[], &policy);
    let other = Policy {
        block_min_chars: policy.block_min_chars + 1,
        ..policy
    };
    assert_eq!(
        BlockIndex::open(blob.clone(), &other).err(),
        Some(crate::domain::paged::IndexError::OtherSettings)
    );
    let mut old = blob.clone();
    old[4..6].copy_from_slice(&(index::FORMAT_VERSION + 1).to_le_bytes());
    assert!(matches!(
        BlockIndex::open(old, &policy).err(),
        Some(crate::domain::paged::IndexError::OldFormat(_))
    ));
    // A policy index is not a block-list index, nor is the list's JSON.
    assert_eq!(
        BlockIndex::open(b"{\"entries\":[]}".to_vec(), &policy).err(),
        Some(crate::domain::paged::IndexError::NotAnIndex)
    );
    let cut = blob[..blob.len() - 5].to_vec();
    assert_eq!(
        BlockIndex::open(cut, &policy).err(),
        Some(crate::domain::paged::IndexError::Truncated)
    );
}

#[test]
fn a_damaged_compiled_index_never_gives_a_wrong_answer() {
    // Enough entries for many pages, so that most pages are first read by a lookup.
    let mut entries = fixture();
    for i in 0..300 {
        entries.push(Entry::parse(&format!("@filler{i}x{}:example.org", i * 7), None, 0).unwrap());
    }
    let policy = Policy::default();
    let blob = BlockIndex::compile(&entries, &[], &policy);
    let good = answers(&BlockIndex::open(blob.clone(), &policy).unwrap());
    // Any flipped byte is found: by the open, or by the lookup that reads its page (which then
    // answers a hold, never an allow, and marks the copy damaged), or by a full check. A lookup that found nothing
    // wrong answers exactly as the intact index.
    let mut holds = 0;
    for i in 8..blob.len() {
        let mut bad = blob.clone();
        bad[i] ^= 0x20;
        let Ok(index) = BlockIndex::open(bad, &policy) else {
            continue;
        };
        for (u, want) in candidates().iter().zip(&good) {
            let got = index
                .judge(u, Some("Alice Admin"))
                .map(|v| (v.outcome(), v.explain()));
            if index.damaged() {
                // Held (or blocked on what it could read): never let in on a damaged copy.
                assert!(got.is_some(), "byte {i}, {u}: let in on a damaged copy");
                holds += 1;
                break;
            }
            assert_eq!(&got, want, "a flip of byte {i} changed the answer for {u}");
        }
        assert!(
            index.damaged() || index.check_all().is_err(),
            "a flip of byte {i} went unnoticed"
        );
    }
    assert!(
        holds > 0,
        "some flips are found by a lookup, not by the open"
    );
}

#[test]
fn allowed_user_ids_are_found_by_their_exact_id_in_any_case() {
    let allowed = vec![
        Allow {
            user_id: "@bob:example.org".into(),
            reason: Some("known to us".into()),
            added_at: 1,
        },
        Allow {
            user_id: "@amy:example.org".into(),
            reason: None,
            added_at: 2,
        },
    ];
    let index = BlockIndex::build_full(&fixture(), &allowed, Policy::default());
    assert_eq!(
        index.allowed("@Bob:example.org").as_deref(),
        Some("known to us")
    );
    assert_eq!(index.allowed("@amy:example.org").as_deref(), Some(""));
    assert_eq!(index.allowed("@bob2:example.org"), None);
    assert_eq!(index.allowed("@bob:example.or"), None);
}
