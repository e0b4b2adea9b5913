//! Golden id vectors.
//!
//! THESE VECTORS ARE THE ID CONTRACT. Every checkpoint ever stored is found again only because
//! the same call still hashes to the same id. If any vector here changes, every stored
//! checkpoint is orphaned (silently: its calls just miss and recompute). So a change here is
//! never a test to "update": it requires bumping `ckpt::identifier::ID_SCHEME` deliberately, documenting the
//! new scheme in ARCHITECTURE.md, and regenerating these vectors in the same commit.
//!
//! The vectors were computed once with the scheme-1 code and pinned. On a mismatch the failure
//! message prints the whole table as the current code computes it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ckpt::identifier::canonical_bytes;
use ckpt::{
    AutoIdentifier, Call, CheckpointId, FnNameIdentifier, Function, Identifier, Unordered,
    code_hash,
};
use serde::{Serialize, Serializer};

#[derive(Serialize)]
struct Marker;

#[derive(Serialize)]
struct Meters(f64);

#[derive(Serialize)]
struct Rgb(u8, u8, u8);

#[derive(Serialize)]
struct Point {
    x: i32,
    y: i32,
}

#[derive(Serialize)]
enum Shape {
    Empty,
    Circle(f64),
    Rect(u32, u32),
    Poly { sides: u8, name: String },
}

/// Bytes serialized as bytes (what `serde_bytes` does), not as a sequence of `u8`.
struct Bytes(&'static [u8]);

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares computed vectors with the pinned ones; on any difference, fails with every
/// difference and the whole table as computed.
fn check(table: &str, computed: &[(&str, String)], pinned: &[(&str, &str)]) {
    let mut problems = Vec::new();
    let labels: Vec<&str> = computed.iter().map(|(l, _)| *l).collect();
    let pinned_labels: Vec<&str> = pinned.iter().map(|(l, _)| *l).collect();
    if labels != pinned_labels {
        problems.push(format!("labels differ: {labels:?} vs {pinned_labels:?}"));
    }
    for ((label, got), (_, want)) in computed.iter().zip(pinned) {
        if got != want {
            problems.push(format!("{label}: computed {got}, pinned {want}"));
        }
    }
    if !problems.is_empty() {
        let mut table_src = String::new();
        for (label, got) in computed {
            table_src.push_str(&format!("        ({label:?}, {got:?}),\n"));
        }
        panic!(
            "{table}: the id contract changed (see the top of this file)\n{}\n\ncomputed:\n{table_src}",
            problems.join("\n")
        );
    }
}

fn id<A: Serialize + ?Sized>(f: &Function, args: &A) -> String {
    AutoIdentifier.id_of(f, args).unwrap().to_string()
}

#[test]
fn the_scheme_version_is_pinned() {
    assert_eq!(ckpt::identifier::ID_SCHEME, 1);
}

/// One argument of every shape of the serde data model, through `AutoIdentifier`.
#[test]
fn argument_ids() {
    let f = Function::new("golden", "f");
    let nested: HashMap<String, BTreeMap<u8, Vec<i16>>> = [
        ("a".to_string(), [(1u8, vec![-1i16, 2])].into()),
        ("b".to_string(), [(2u8, vec![]), (3, vec![300])].into()),
    ]
    .into();
    let computed: Vec<(&str, String)> = vec![
        ("bool", id(&f, &true)),
        ("i8", id(&f, &-5i8)),
        ("i16", id(&f, &-300i16)),
        ("i32", id(&f, &-70_000i32)),
        ("i64", id(&f, &-5_000_000_000i64)),
        ("i128", id(&f, &i128::MIN)),
        ("u8", id(&f, &200u8)),
        ("u16", id(&f, &60_000u16)),
        ("u32", id(&f, &4_000_000_000u32)),
        ("u64", id(&f, &u64::MAX)),
        ("u128", id(&f, &(u128::MAX - 1))),
        ("f32", id(&f, &1.5f32)),
        ("f64", id(&f, &-2.25f64)),
        ("f64 nan", id(&f, &f64::NAN)),
        ("f64 -nan", id(&f, &-f64::NAN)),
        ("f64 0", id(&f, &0.0f64)),
        ("f64 -0", id(&f, &-0.0f64)),
        ("f32 nan", id(&f, &f32::NAN)),
        ("char", id(&f, &'é')),
        ("str", id(&f, "héllo")),
        ("string", id(&f, &String::from("héllo"))),
        ("empty str", id(&f, "")),
        ("bytes", id(&f, &Bytes(b"\x00\xffab"))),
        ("none", id(&f, &None::<u8>)),
        ("some", id(&f, &Some(7u8))),
        ("unit", id(&f, &())),
        ("unit struct", id(&f, &Marker)),
        ("newtype struct", id(&f, &Meters(1.25))),
        ("tuple", id(&f, &(1u8, "a", 'b'))),
        ("tuple struct", id(&f, &Rgb(1, 2, 3))),
        ("struct", id(&f, &Point { x: -1, y: 2 })),
        ("unit variant", id(&f, &Shape::Empty)),
        ("newtype variant", id(&f, &Shape::Circle(2.0))),
        ("tuple variant", id(&f, &Shape::Rect(3, 4))),
        (
            "struct variant",
            id(
                &f,
                &Shape::Poly {
                    sides: 6,
                    name: "hex".into(),
                },
            ),
        ),
        ("vec", id(&f, &vec![1u16, 2, 3])),
        ("empty vec", id(&f, &Vec::<u8>::new())),
        ("nested maps", id(&f, &nested)),
        ("hashset", id(&f, &HashSet::from(["x", "y", "z"]))),
        ("btreeset", id(&f, &BTreeSet::from([3i64, 1, 2]))),
        (
            "btreemap",
            id(&f, &BTreeMap::from([(1u32, "one"), (2, "two")])),
        ),
        (
            "vec of sets",
            id(&f, &vec![HashSet::from([1u8, 2]), HashSet::new()]),
        ),
        (
            "slice of sets",
            id(&f, &[HashSet::from([1u8]), HashSet::from([2u8])][..]),
        ),
        ("unordered", id(&f, &Unordered(vec![3u8, 1, 2]))),
        (
            "several args",
            id(
                &f,
                &(42u64, "text", vec![0.5f32], Some(Point { x: 0, y: 0 })),
            ),
        ),
    ];
    check("argument ids", &computed, ARGUMENT_IDS);
}

const ARGUMENT_IDS: &[(&str, &str)] = &[
    ("bool", "c7d53758c2e1207cde3525b85bc9a422"),
    ("i8", "384c86dd5c3c0043498fe1bd397c497c"),
    ("i16", "1b59a19de7b44a452cbdf50f1d2a45c5"),
    ("i32", "6f694ca59d1ee0b25d953a2fb1a3a1ec"),
    ("i64", "4716be4616c368e06285b23b6ca57aba"),
    ("i128", "af19a9cb673ed86daf3e114ec2f266c3"),
    ("u8", "b3420dc02c504a0a8d0834f4b2da4672"),
    ("u16", "5ce80e74f3b1b0d2e7bc68c8811ceb63"),
    ("u32", "c618d91a399f95227cf92e6b28cfacd6"),
    ("u64", "2ebcc0813f3085de84fc05e76e4dfc28"),
    ("u128", "1134f3f19bc6c860ab5d199bd9c3d74a"),
    ("f32", "22ef75febc43dc334fde39e50b13a28d"),
    ("f64", "1bf3d2c750ecb7a738fbddb170250208"),
    ("f64 nan", "66e24270bf0b57064ea0c6811d01a098"),
    ("f64 -nan", "66e24270bf0b57064ea0c6811d01a098"),
    ("f64 0", "a29a0aed6102a115a6fde892b1a29340"),
    ("f64 -0", "7eb2b30bc904560926d51270cb45db42"),
    ("f32 nan", "60edb11d9237270f6a25ad5b86d70a5f"),
    ("char", "32dff4debd1f039acd250f439940aff1"),
    ("str", "2203e2406c90bda97d3749f5b80bb927"),
    ("string", "2203e2406c90bda97d3749f5b80bb927"),
    ("empty str", "7d074ed65766d52aa425652b777d3648"),
    ("bytes", "4564bee53de8e3580240eb871d49272a"),
    ("none", "544a2db192f4a9743021cff11a817306"),
    ("some", "c147a007d2c6ec4fccc4047783fef7fa"),
    ("unit", "45ff4251aeb891297c7c2a8b0df1c6d0"),
    ("unit struct", "6bf59becdb68fba4b29b1eef89ea7356"),
    ("newtype struct", "3a629b9ae38e98a33510cada2c72b564"),
    ("tuple", "66531d452885e58125821d9365aebe07"),
    ("tuple struct", "b2ba876cc40f00f89d58e96045814692"),
    ("struct", "9ccf5b46619b2902701e79644c988345"),
    ("unit variant", "183b8ce3d68ea5e54f6c8e4c52ded287"),
    ("newtype variant", "1e68697b8a4c57db112730deb80fb66f"),
    ("tuple variant", "39777153cafcfab491e7c3d008c9e43d"),
    ("struct variant", "68ecf84875a8e85f0cce31e6fcd98d84"),
    ("vec", "0065ead659dd6cf8696030975ca4dda4"),
    ("empty vec", "811a7251d2cdb00d7bf32c9f74213c58"),
    ("nested maps", "4360f4c28cf661caa2cdf50505fb7a72"),
    ("hashset", "91dc632b9141a8a437e67167caf944b6"),
    ("btreeset", "e78337be8a105866d0724acd11b7295d"),
    ("btreemap", "edae17378f99fc4d210637ff8bd19a03"),
    ("vec of sets", "274dcaa96808a589cae30891c38843a3"),
    ("slice of sets", "94e94c58909f1fc1478a4af561f2e50b"),
    ("unordered", "34b1258fc2230ec6638bf8588d9eb1ed"),
    ("several args", "bbdf6099f6a283376945e6bc4790691a"),
];

/// One call across function identities: code hash and version each change the id.
#[test]
fn function_identity_ids() {
    let args = (42u64, "x");
    let plain = Function::new("golden", "f");
    let hashed = Function::new("golden", "f").with_code_hash(0x0123_4567_89ab_cdef);
    let versioned = Function::new("golden", "f").with_version("2");
    let both = Function::new("golden", "f")
        .with_code_hash(0x0123_4567_89ab_cdef)
        .with_version("2");
    let computed: Vec<(&str, String)> = vec![
        ("plain", id(&plain, &args)),
        ("code hash", id(&hashed, &args)),
        ("version", id(&versioned, &args)),
        ("code hash and version", id(&both, &args)),
        ("other name", id(&Function::new("golden", "g"), &args)),
        (
            "other module",
            id(&Function::new("golden::sub", "f"), &args),
        ),
        ("empty module", id(&Function::new("", "f"), &args)),
        (
            "macro-like",
            id(
                &Function::new("app::model", "embed")
                    .with_code_hash(code_hash("(x: u64) -> u64 { x * 2 }")),
                &(&7u64,),
            ),
        ),
    ];
    check("function identity ids", &computed, FUNCTION_IDENTITY_IDS);
}

const FUNCTION_IDENTITY_IDS: &[(&str, &str)] = &[
    ("plain", "a9758bbe1288fbd279c06ab5817dcd0b"),
    ("code hash", "09257e539e6eb91fc9eeb7b75a6e9d29"),
    ("version", "087dc38315b93c1fdb2293ab4b713f16"),
    ("code hash and version", "a2bb92458f5d753648b13363621fdb10"),
    ("other name", "d321c685875e9a8b0f6ea897ae1479d3"),
    ("other module", "ae78d1accd7c227cc5cf5b7e4895c356"),
    ("empty module", "4607aed552aac42726c0aa908a62b800"),
    ("macro-like", "6d0ed7783ef4e5b0f8a1b823a2c23359"),
];

/// `FnNameIdentifier`: module and name only.
#[test]
fn fn_name_ids() {
    let name_id = |f: &Function| -> String {
        let call = Call::new(f, &());
        Identifier::<()>::identify(&FnNameIdentifier, &call)
            .unwrap()
            .to_string()
    };
    let computed: Vec<(&str, String)> = vec![
        ("golden::f", name_id(&Function::new("golden", "f"))),
        (
            "golden::f v2 hashed",
            name_id(
                &Function::new("golden", "f")
                    .with_version("2")
                    .with_code_hash(9),
            ),
        ),
        ("golden::g", name_id(&Function::new("golden", "g"))),
        ("f", name_id(&Function::new("", "f"))),
    ];
    check("fn-name ids", &computed, FN_NAME_IDS);
}

const FN_NAME_IDS: &[(&str, &str)] = &[
    ("golden::f", "8d38f13a09c2d2bbb3fe8ca67dcc9daf"),
    ("golden::f v2 hashed", "8d38f13a09c2d2bbb3fe8ca67dcc9daf"),
    ("golden::g", "cdec2a0e5c2fa96d3c78bcac2a948bd9"),
    ("f", "d261abb2965a8a42ac3d3f4e722ad9ae"),
];

/// `Function::key`, `digest` and `code_version`.
#[test]
fn function_hashes() {
    let plain = Function::new("golden", "f");
    let both = Function::new("golden", "f")
        .with_code_hash(0x0123_4567_89ab_cdef)
        .with_version("2");
    let computed: Vec<(&str, String)> = vec![
        ("key golden::f", format!("{:016x}", plain.key())),
        (
            "key golden::g",
            format!("{:016x}", Function::new("golden", "g").key()),
        ),
        ("key f", format!("{:016x}", Function::new("", "f").key())),
        (
            "key a::b::c",
            format!("{:016x}", Function::new("a::b", "c").key()),
        ),
        ("digest plain", format!("{:032x}", plain.digest())),
        (
            "digest hashed and versioned",
            format!("{:032x}", both.digest()),
        ),
        (
            "code version plain",
            format!("{:016x}", plain.code_version()),
        ),
        (
            "code version hashed and versioned",
            format!("{:016x}", both.code_version()),
        ),
    ];
    check("function hashes", &computed, FUNCTION_HASHES);
}

const FUNCTION_HASHES: &[(&str, &str)] = &[
    ("key golden::f", "626fe2d7ef80c64e"),
    ("key golden::g", "b74db814ce6fffa9"),
    ("key f", "b516a3420ddbca18"),
    ("key a::b::c", "fd524a5db8167b81"),
    ("digest plain", "ac85014f5d43b0b25d53583c5280a737"),
    (
        "digest hashed and versioned",
        "e82e2fb44737d453a6445052a8e3524e",
    ),
    ("code version plain", "5d53583c5280a737"),
    ("code version hashed and versioned", "a6445052a8e3524e"),
];

/// `code_hash` of source text.
#[test]
fn code_hashes() {
    let h = |s: &str| format!("{:016x}", code_hash(s));
    let computed: Vec<(&str, String)> = vec![
        ("empty", h("")),
        ("x * 2", h("{ x * 2 }")),
        ("x*2 compact", h("{x*2}")),
        ("x * 3", h("{ x * 3 }")),
        ("signature", h("(x: u64) -> u64 { x + 1 }")),
        ("string literal", h(r#"{ "a  b" }"#)),
        ("raw string", h(r##"{ r#"a  b"# }"##)),
        ("char literal", h("{ c == ' ' }")),
        ("escaped quote", h(r"{ ['\'',' '] }")),
    ];
    check("code hashes", &computed, CODE_HASHES);
}

const CODE_HASHES: &[(&str, &str)] = &[
    ("empty", "2d06800538d394c2"),
    ("x * 2", "0d2236935816257d"),
    ("x*2 compact", "0d2236935816257d"),
    ("x * 3", "3e483f7675149f6c"),
    ("signature", "166d99f3228d727a"),
    ("string literal", "a45f32e29b2c9fd5"),
    ("raw string", "81fdad778ff2b701"),
    ("char literal", "39f530df123d5cb3"),
    ("escaped quote", "609bae48aafb58d9"),
];

/// The canonical bytes behind the ids.
#[test]
fn canonical_encodings() {
    let b = |bytes: Vec<u8>| hex(&bytes);
    let computed: Vec<(&str, String)> = vec![
        ("u32", b(canonical_bytes(&7u32).unwrap())),
        ("str", b(canonical_bytes("ab").unwrap())),
        ("tuple", b(canonical_bytes(&(1u8, Some(-1i16))).unwrap())),
        ("vec", b(canonical_bytes(&vec![true]).unwrap())),
        ("unit struct", b(canonical_bytes(&Marker).unwrap())),
        (
            "struct",
            b(canonical_bytes(&Point { x: 1, y: -1 }).unwrap()),
        ),
        (
            "tuple variant",
            b(canonical_bytes(&Shape::Rect(1, 2)).unwrap()),
        ),
        (
            "map",
            b(canonical_bytes(&BTreeMap::from([(1u8, 2u8)])).unwrap()),
        ),
        ("set", b(canonical_bytes(&HashSet::from([5u8])).unwrap())),
        ("f64 nan", b(canonical_bytes(&f64::NAN).unwrap())),
    ];
    check("canonical bytes", &computed, CANONICAL_BYTES);
}

const CANONICAL_BYTES: &[(&str, &str)] = &[
    ("u32", "0907000000"),
    ("str", "0f02000000000000006162"),
    ("tuple", "1907011203ffff21"),
    ("vec", "18010121"),
    ("unit struct", "1406000000000000004d61726b6572"),
    (
        "struct",
        "1c0500000000000000506f696e742001000000000000007804010000002001000000000000007904ffffffff21",
    ),
    (
        "tuple variant",
        "1b050000000000000053686170650400000000000000526563740901000000090200000021",
    ),
    ("map", "1e0100000000000000ba60450c351d68c6fdd6aa22725ef959"),
    ("set", "1f01000000000000004b5eb10d93777570bbfd39be2f5b8152"),
    ("f64 nan", "0d000000000000f87f"),
];

#[test]
fn ids_print_as_32_hex_digits_of_their_bytes() {
    let id = CheckpointId::from_u128(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff);
    assert_eq!(id.to_string(), "ffeeddccbbaa99887766554433221100");
    assert_eq!(hex(id.as_bytes()), id.to_string());
}

/// The layout behind the vectors, recomputed from its parts with xxh3 directly.
#[test]
fn ids_are_xxh3_of_tag_function_and_canonical_bytes() {
    use xxhash_rust::xxh3::{xxh3_64, xxh3_128};
    fn len_prefixed(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let f = Function::new("golden", "f")
        .with_code_hash(0x0123_4567_89ab_cdef)
        .with_version("2");

    let mut key = b"ckpt-fk\x01".to_vec();
    len_prefixed(&mut key, "golden");
    len_prefixed(&mut key, "f");
    assert_eq!(f.key(), xxh3_64(&key));

    let mut digest = b"ckpt-fd\x01".to_vec();
    len_prefixed(&mut digest, "golden");
    len_prefixed(&mut digest, "f");
    digest.push(1);
    digest.extend_from_slice(&0x0123_4567_89ab_cdefu64.to_le_bytes());
    digest.push(1);
    len_prefixed(&mut digest, "2");
    assert_eq!(f.digest(), xxh3_128(&digest));
    assert_eq!(f.code_version(), f.digest() as u64);

    let args = (42u64, "x");
    let mut input = b"ckpt-id\x01".to_vec();
    input.extend_from_slice(&f.digest().to_le_bytes());
    input.extend_from_slice(&canonical_bytes(&args).unwrap());
    assert_eq!(
        AutoIdentifier.id_of(&f, &args).unwrap(),
        CheckpointId::from_u128(xxh3_128(&input))
    );

    let mut name = b"ckpt-fn\x01".to_vec();
    len_prefixed(&mut name, "golden");
    len_prefixed(&mut name, "f");
    assert_eq!(
        Identifier::<()>::identify(&FnNameIdentifier, &Call::new(&f, &())).unwrap(),
        CheckpointId::from_u128(xxh3_128(&name))
    );

    // code_hash: xxh3-64 of the normalised text.
    assert_eq!(code_hash("{ x  *  2 }"), xxh3_64(b"{x*2}"));
    assert_eq!(code_hash("let  x = 1"), xxh3_64(b"let x=1"));
}
