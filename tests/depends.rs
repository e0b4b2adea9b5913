//! `#[checkpoint(depends = [helper, other::f])]`: the code versions of other checkpointed
//! functions fold into this one's, so a change to a helper invalidates its callers' results,
//! while a function without `depends` keeps its code version (and its ids).

mod v1 {
    pub mod text {
        ckpt::checkpoint! {
            #[checkpoint(cache = ckpt::MemoryCache::new())]
            pub fn clean(s: String) -> String {
                s.trim().to_lowercase()
            }
        }
    }
    ckpt::checkpoint! {
        #[checkpoint(cache = ckpt::MemoryCache::new())]
        pub fn helper(x: u64) -> u64 {
            x + 1
        }
    }
    ckpt::checkpoint! {
        #[checkpoint(cache = ckpt::MemoryCache::new(), depends = [helper, text::clean])]
        pub fn caller(x: u64) -> u64 {
            helper(x) * 2
        }
    }
    ckpt::checkpoint! {
        #[checkpoint(cache = ckpt::MemoryCache::new())]
        pub fn plain(x: u64) -> u64 {
            helper(x) * 2
        }
    }
}

/// The caller's code hash: its own tokens' hash, with the helpers' code versions folded in.
#[test]
fn a_caller_s_code_version_folds_in_its_helpers() {
    let caller = v1::caller::decorator().function().clone();
    let own = ckpt::code_hash("(x: u64) -> u64 { helper(x) * 2 }");
    // Without `depends`, the same tokens give the plain hash.
    let plain = v1::plain::decorator().function();
    assert_eq!(plain.code_hash(), Some(own));
    // With it, something else, which is the plain hash's function of the helpers' versions.
    assert_ne!(caller.code_hash(), Some(own));
    assert_eq!(caller.module(), "depends::v1");
    // The fold is order- and value-sensitive: the helpers' versions decide it.
    let helpers = [v1::helper::code_version(), v1::text::clean::code_version()];
    // `__private::function` is what the macro's expansion calls (hidden, not public API).
    let folded = |versions: &'static [fn() -> u64]| {
        ckpt::__private::function(
            "depends::v1::caller",
            "caller",
            "(x: u64) -> u64 { helper(x) * 2 }",
            None,
            versions,
        )
    };
    fn helper_v() -> u64 {
        v1::helper::code_version()
    }
    fn clean_v() -> u64 {
        v1::text::clean::code_version()
    }
    fn other_v() -> u64 {
        v1::helper::code_version() ^ 1
    }
    assert_eq!(folded(&[helper_v, clean_v]).digest(), caller.digest());
    assert_ne!(folded(&[clean_v, helper_v]).digest(), caller.digest());
    // An edited helper (another code version) gives the caller another code version, so its
    // stored results are not reused.
    assert_ne!(folded(&[other_v, clean_v]).digest(), caller.digest());
    // No dependency: exactly the plain function.
    assert_eq!(folded(&[]).code_hash(), Some(own));
    assert_ne!(helpers[0], helpers[1]);
    assert_eq!(v1::caller(4), 10);
    assert_eq!(v1::caller(4), 10);
    assert_eq!(v1::caller::stats().hits, 1);
}
