//! Unguessable identifiers from the kernel's CSPRNG (`getrandom(2)`).

/// 128 random bits as 32 lowercase hex digits: capability ids and fs
/// handles. Unguessable, so knowing one id says nothing about another.
pub fn id128() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the kernel CSPRNG is available");
    crate::token::hex(&bytes)
}

/// 32 random bytes, for a new signing key seed.
pub fn seed() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the kernel CSPRNG is available");
    bytes
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_distinct_cap_ids() {
        let a = super::id128();
        let b = super::id128();
        assert_ne!(a, b);
        assert!(crate::ids::is_cap_id(&a));
    }
}
