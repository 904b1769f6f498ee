//! The `pod-template-hash`: a short, stable name for a pod template.
//!
//! Upstream hashes the template with 32-bit FNV-1a and renders the decimal number
//! through `rand.SafeEncodeString` (an alphabet without vowels, so names never spell
//! words, and without look-alike characters). Upstream feeds FNV Go's `spew` dump of
//! the struct, which no other language reproduces; Gantry feeds it the template's
//! canonical JSON (fields in a fixed order, maps sorted, empty values dropped), so the
//! hash is just as stable, only not byte-identical to upstream's.

use k8s_openapi::api::core::v1::PodTemplateSpec;

use crate::workload::canonical_template;

/// `k8s.io/apimachinery/pkg/util/rand`'s alphabet for safe-encoded strings.
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

const FNV32_OFFSET_BASIS: u32 = 0x811c_9dc5;
const FNV32_PRIME: u32 = 0x0100_0193;

/// The hash for a template; a Deployment's `collisionCount` is mixed in so that a
/// collision with a foreign ReplicaSet is resolved by bumping the count.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut hash = FNV32_OFFSET_BASIS;
    let mut write = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u32::from(*byte);
            hash = hash.wrapping_mul(FNV32_PRIME);
        }
    };
    write(canonical_template(template).to_string().as_bytes());
    if let Some(count) = collision_count {
        // Upstream writes the count as 8 little-endian bytes of which the first 4 are set.
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&count.to_le_bytes());
        write(&bytes);
    }
    safe_encode(&hash.to_string())
}

/// `rand.SafeEncodeString`: each byte picks a character of the safe alphabet.
fn safe_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| char::from(SAFE_ALPHABET[usize::from(byte) % SAFE_ALPHABET.len()]))
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    use super::*;

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // Test vectors of the FNV reference implementation, rendered as upstream does.
        let hash = |input: &[u8]| {
            let mut hash = FNV32_OFFSET_BASIS;
            for byte in input {
                hash ^= u32::from(*byte);
                hash = hash.wrapping_mul(FNV32_PRIME);
            }
            hash
        };
        assert_eq!(hash(b""), 0x811c_9dc5);
        assert_eq!(hash(b"a"), 0xe40c_292c);
        assert_eq!(hash(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn safe_encoding_uses_upstreams_alphabet() {
        // '0' is byte 48, 48 % 27 = 21 -> '4'; '9' is 57 % 27 = 3 -> 'f'.
        assert_eq!(safe_encode("09"), "4f");
    }

    #[test]
    fn hash_is_stable_and_follows_the_template() {
        let nginx = pod_template_hash(&template("nginx:1"), None);
        assert_eq!(nginx, pod_template_hash(&template("nginx:1"), None));
        assert_ne!(nginx, pod_template_hash(&template("nginx:2"), None));
        assert_ne!(nginx, pod_template_hash(&template("nginx:1"), Some(1)));
        assert!(nginx.len() <= 10);
        assert!(nginx.bytes().all(|b| SAFE_ALPHABET.contains(&b)));
    }
}
