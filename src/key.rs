//! Regions, key mangling, tag normalisation and glob matching: the string
//! formats shared with the reference implementation (see COMPAT.md).

use std::sync::OnceLock;

/// A cache key with its hash, computed once per call and shared by the
/// memory store and the dogpile locks. The hash is seeded randomly per
/// process (keys come from callers' arguments).
#[derive(Debug, Clone, Copy)]
pub struct HashedKey<'a> {
    pub text: &'a str,
    pub hash: u64,
}

impl<'a> HashedKey<'a> {
    #[inline(always)] // on every call's path: left to itself, the compiler stopped inlining it
    pub fn new(text: &'a str) -> Self {
        static HASHER: OnceLock<ahash::RandomState> = OnceLock::new();
        let hash = HASHER.get_or_init(ahash::RandomState::new).hash_one(text);
        Self { text, hash }
    }
}

/// The region name of a TTL: `59s`, `5m`, `1h`, `1d`; `-1s` for a callable TTL.
pub fn region_name(ttl: i64) -> String {
    if ttl < 60 {
        format!("{ttl}s")
    } else if ttl < 3600 {
        format!("{}m", ttl / 60)
    } else if ttl < 86_400 {
        format!("{}h", ttl / 3600)
    } else {
        format!("{}d", ttl / 86_400)
    }
}

/// The start of every mangled key of a region: `"{region}:{key_prefix}"`.
pub fn key_head(ttl: i64, key_prefix: &str) -> String {
    format!("{}:{key_prefix}", region_name(ttl))
}

/// `"{region}:{key_prefix}{base}"`.
pub fn mangle(base: &str, key_prefix: &str, ttl: i64) -> String {
    let mut out = key_head(ttl, key_prefix);
    out.push_str(base);
    out
}

/// Empty stays empty; otherwise strip surrounding `|`, turn inner `|` into
/// `.`, and wrap in `|`: `user|admin` → `|user.admin|`.
pub fn normalize_tag(tag: &str) -> String {
    if tag.is_empty() {
        return String::new();
    }
    format!("|{}|", tag.trim_matches('|').replace('|', "."))
}

/// `text` as a glob that matches exactly `text` in every glob dialect the
/// backends speak (`fnmatch`, SQLite `GLOB`, Redis `MATCH`): `*`, `?`, `[`
/// and the backslash (an escape in Redis only) become one-character classes.
pub fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '*' => out.push_str("[*]"),
            '?' => out.push_str("[?]"),
            '[' => out.push_str("[[]"),
            // `[\\]` is a class holding one backslash for all three readers.
            '\\' => out.push_str("[\\\\]"),
            c => out.push(c),
        }
    }
    out
}

/// The glob that selects a tag's keys, the tag taken literally:
/// `*||users||*` (a tagged base key is `name||users||...`); `None` for no
/// tag. The bars on both sides keep untagged keys whose arguments merely
/// contain `|users|` out of it.
pub fn tag_pattern(tag: &str) -> Option<String> {
    if tag.is_empty() {
        None
    } else {
        Some(format!("*|{}|*", glob_escape(&normalize_tag(tag))))
    }
}

/// The glob that selects one function's keys in a region, whatever its tag:
/// `*:{key_prefix}{name}|*`, prefix and name taken literally.
pub fn function_pattern(key_prefix: &str, name: &str) -> String {
    format!("*:{}{}|*", glob_escape(key_prefix), glob_escape(name))
}

/// The start of a function's base key: `name|` or `name||tag||`.
pub fn base_head(name: &str, tag: &str) -> String {
    let tag = normalize_tag(tag);
    if tag.is_empty() {
        format!("{name}|")
    } else {
        format!("{name}|{tag}|")
    }
}

/// Shell-style glob match as `fnmatch.fnmatchcase`, Redis `MATCH` and SQLite
/// `GLOB` read it: `*` any run, `?` one character, `[abc]`, `[a-z]`, `[!x]`
/// (and `[^x]`) classes. An unclosed `[` matches itself literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    // Where to resume after the last `*`: (pattern index after it, text index).
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi + 1, ti));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = match_class(&p, pi, t[ti]) {
                        if matched {
                            pi = next;
                            ti += 1;
                            continue;
                        }
                    } else if t[ti] == '[' {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
                c => {
                    if c == t[ti] {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Match `c` against the class starting at `p[start] == '['`. Returns
/// `(matched, index after the class)`, or `None` if the class is unclosed.
fn match_class(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = i < p.len() && (p[i] == '!' || p[i] == '^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions() {
        assert_eq!(region_name(59), "59s");
        assert_eq!(region_name(0), "0s");
        assert_eq!(region_name(-1), "-1s");
        assert_eq!(region_name(60), "1m");
        assert_eq!(region_name(300), "5m");
        assert_eq!(region_name(3599), "59m");
        assert_eq!(region_name(3600), "1h");
        assert_eq!(region_name(86_399), "23h");
        assert_eq!(region_name(86_400), "1d");
        assert_eq!(region_name(7 * 86_400 + 5), "7d");
    }

    #[test]
    fn mangling() {
        assert_eq!(
            mangle("get_user|user_id=123", "v1:", 300),
            "5m:v1:get_user|user_id=123"
        );
        assert_eq!(mangle("f|", "", -1), "-1s:f|");
    }

    #[test]
    fn tags() {
        assert_eq!(normalize_tag(""), "");
        assert_eq!(normalize_tag("users"), "|users|");
        assert_eq!(normalize_tag("user|admin"), "|user.admin|");
        assert_eq!(normalize_tag("||a|b||"), "|a.b|");
        assert_eq!(tag_pattern("users").as_deref(), Some("*||users||*"));
        assert_eq!(tag_pattern("*").as_deref(), Some("*||[*]||*"));
        assert_eq!(
            tag_pattern("a?[b]\\").as_deref(),
            Some("*||a[?][[]b][\\\\]||*")
        );
        assert_eq!(tag_pattern(""), None);
        assert_eq!(base_head("get_user", "users"), "get_user||users||");
        assert_eq!(base_head("get_user", ""), "get_user|");
        assert_eq!(function_pattern("v1:", "f"), "*:v1:f|*");
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("5m:*", "5m:f|x=1"));
        assert!(!glob_match("5m:*", "1h:f|x=1"));
        assert!(glob_match("*|users|*", "5m:get_user||users||user_id=1"));
        assert!(!glob_match("*|users|*", "5m:get_user|user_id=1"));
        assert!(glob_match("f?o", "foo"));
        assert!(!glob_match("f?o", "fo"));
        assert!(glob_match("[abc]x", "bx"));
        assert!(!glob_match("[abc]x", "dx"));
        assert!(glob_match("[a-c]x", "cx"));
        assert!(glob_match("[!a-c]x", "dx"));
        assert!(!glob_match("[!a-c]x", "ax"));
        assert!(glob_match("[]]", "]"));
        assert!(glob_match("a[b", "a[b"));
        assert!(glob_match("*a*b*c", "xxaxxbxxc"));
        assert!(!glob_match("*a*b*c", "xxaxxcxxb"));
        assert!(glob_match("*:v1:f|*", "5m:v1:f|x=1"));
        assert!(glob_match("é*", "été"));
    }

    #[test]
    fn escaped_globs_match_literally() {
        for text in ["*", "a?b", "[x]", "a\\b", "[!a]*", "plain", "é[*"] {
            let pattern = glob_escape(text);
            assert!(glob_match(&pattern, text), "{pattern}");
            assert!(!glob_match(&pattern, &format!("{text}x")), "{pattern}");
        }
        assert!(!glob_match(&glob_escape("a?b"), "axb"));
        assert!(!glob_match(&glob_escape("*"), "x"));
        let tagged = "5m:f||*||x=1";
        let star = tag_pattern("*").unwrap();
        assert!(glob_match(&star, tagged));
        assert!(!glob_match(&star, "5m:f|x=1"));
        assert!(!glob_match(&star, "5m:f||users||x=1"));
        let users = tag_pattern("users").unwrap();
        assert!(!glob_match(&users, "5m:f|x='|users|'"));
    }
}
