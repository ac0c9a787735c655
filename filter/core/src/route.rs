//! Compiled route table: host, path and method matching.
//!
//! Rules are compiled once at configure time; matching walks them in order
//! and returns the first hit, so the order in the config is the order of
//! precedence, exactly as written.

use crate::config::ConfigError;
use crate::policy::CompiledPolicy;
use meshgate_wire::config::{PathMatch, RouteRule};
use std::borrow::Cow;

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Route {
    /// Name used in logs, metrics and problem bodies.
    pub name: String,
    host: HostMatch,
    path: CompiledPath,
    methods: Vec<String>,
    /// Policy for requests this rule matches.
    pub policy: CompiledPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com` stored as `.example.com`: exactly one label before it.
    WildcardLabel(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CompiledPath {
    Exact(String),
    /// Stored without a trailing slash; `""` means every path.
    Prefix(String),
    Template(Vec<Segment>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
    Rest,
}

/// Whether an `:authority` is one `host[:port]` (empty is allowed: the
/// route's host rule then sees no host). A comma is how Envoy joins two
/// `Host` headers; whitespace, `@`, `/` and controls have no place there.
pub fn is_single_authority(authority: &str) -> bool {
    authority
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'[' | b']' | b'_' | b'%' | b'~'))
}

/// The host part of an `:authority`, lower-cased, without port or trailing
/// dot: borrowed from `authority` unless it had upper-case letters.
pub fn host_of(authority: &str) -> Cow<'_, str> {
    let without_port = if let Some(rest) = authority.strip_prefix('[') {
        // IPv6 literal: keep the brackets' content.
        rest.split(']').next().unwrap_or(rest)
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    let host = without_port.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

impl HostMatch {
    fn compile(host: Option<&str>, field: &str) -> Result<Self, ConfigError> {
        let Some(host) = host else { return Ok(Self::Any) };
        let host = host.to_ascii_lowercase();
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'[' | b']'))
        };
        if host == "*" {
            return Ok(Self::Any);
        }
        if let Some(suffix) = host.strip_prefix("*.") {
            if valid(suffix) {
                return Ok(Self::WildcardLabel(format!(".{suffix}")));
            }
        } else if valid(&host) {
            return Ok(Self::Exact(host));
        }
        Err(ConfigError::new(field, "must be a host name or '*.' followed by one"))
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(h) => h == host,
            Self::WildcardLabel(suffix) => {
                host.strip_suffix(suffix.as_str()).is_some_and(|label| !label.is_empty() && !label.contains('.'))
            }
        }
    }
}

fn compile_template(template: &str, field: &str) -> Result<Vec<Segment>, ConfigError> {
    let Some(rest) = template.strip_prefix('/') else {
        return Err(ConfigError::new(field, "template must start with '/'"));
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let mut segments = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let segment = if *part == "{*}" {
            if i + 1 != parts.len() {
                return Err(ConfigError::new(field, "'{*}' may only be the last segment"));
            }
            Segment::Rest
        } else if part.starts_with('{') && part.ends_with('}') && part.len() > 2 {
            Segment::Param
        } else if part.contains('{') || part.contains('}') || part.is_empty() {
            return Err(ConfigError::new(field, "a segment is empty or has a partial '{…}'"));
        } else {
            Segment::Literal((*part).to_owned())
        };
        segments.push(segment);
    }
    Ok(segments)
}

impl CompiledPath {
    fn compile(path: &PathMatch, case_insensitive: bool, field: &str) -> Result<Self, ConfigError> {
        let fold = |s: &str| if case_insensitive { s.to_ascii_lowercase() } else { s.to_owned() };
        let check = |s: &str| {
            if s.starts_with('/') { Ok(()) } else { Err(ConfigError::new(field, "must start with '/'")) }
        };
        Ok(match path {
            PathMatch::Exact(p) => {
                check(p)?;
                Self::Exact(fold(p))
            }
            PathMatch::Prefix(p) => {
                check(p)?;
                Self::Prefix(fold(p.trim_end_matches('/')))
            }
            PathMatch::Template(t) => Self::Template(compile_template(&fold(t), field)?),
        })
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => p == path,
            Self::Prefix(p) => {
                path.strip_prefix(p.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
            Self::Template(segments) => template_matches(segments, path),
        }
    }
}

fn template_matches(segments: &[Segment], path: &str) -> bool {
    let mut parts = path.strip_prefix('/').unwrap_or(path).split('/');
    for segment in segments {
        match (segment, parts.next()) {
            (Segment::Rest, Some(part)) => return !part.is_empty(),
            (Segment::Param, Some(part)) if !part.is_empty() => {}
            (Segment::Literal(lit), Some(part)) if lit == part => {}
            _ => return false,
        }
    }
    parts.next().is_none()
}

impl Route {
    /// Compiles rule number `index`.
    pub fn compile(rule: &RouteRule, index: usize, case_insensitive: bool) -> Result<Self, ConfigError> {
        let field = format!("routes[{index}]");
        let methods = rule
            .methods
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) {
                    Ok(m.clone())
                } else {
                    Err(ConfigError::new(format!("{field}.methods[{i}]"), "must be an upper-case method"))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            name: rule.name.clone().unwrap_or_else(|| format!("route-{index}")),
            host: HostMatch::compile(rule.host.as_deref(), &format!("{field}.host"))?,
            path: CompiledPath::compile(&rule.path, case_insensitive, &format!("{field}.path"))?,
            methods,
            policy: CompiledPolicy::compile(&rule.policy, &format!("{field}.policy"))?,
        })
    }

    /// Whether this rule matches; `path` is already case-folded when the
    /// table is case-insensitive.
    pub fn matches(&self, host: &str, path: &str, method: &str) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
            && self.host.matches(host)
            && self.path.matches(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), ConfigError>;

    fn compiled(path: PathMatch) -> Result<CompiledPath, ConfigError> {
        CompiledPath::compile(&path, false, "t")
    }

    #[test]
    fn prefix_matches_on_segment_boundaries() -> TestResult {
        let p = compiled(PathMatch::Prefix("/admin/".into()))?;
        assert!(p.matches("/admin"));
        assert!(p.matches("/admin/x"));
        assert!(!p.matches("/administrator"));
        assert!(compiled(PathMatch::Prefix("/".into()))?.matches("/anything"));
        Ok(())
    }

    #[test]
    fn templates_match_whole_segments() -> TestResult {
        let t = compiled(PathMatch::Template("/users/{id}/posts/{*}".into()))?;
        assert!(t.matches("/users/42/posts/7"));
        assert!(t.matches("/users/42/posts/7/comments"));
        assert!(!t.matches("/users/42/posts"));
        assert!(!t.matches("/users//posts/7"));
        let one = compiled(PathMatch::Template("/users/{id}".into()))?;
        assert!(one.matches("/users/42"));
        assert!(!one.matches("/users/42/x"));
        assert!(CompiledPath::compile(&PathMatch::Template("/a/{*}/b".into()), false, "t").is_err());
        assert!(CompiledPath::compile(&PathMatch::Template("/a/{x".into()), false, "t").is_err());
        Ok(())
    }

    #[test]
    fn hosts_and_authorities() -> TestResult {
        assert_eq!(host_of("API.Example.com:8443"), "api.example.com");
        assert_eq!(host_of("[::1]:8080"), "::1");
        assert_eq!(host_of("example.com."), "example.com");
        let wild = HostMatch::compile(Some("*.example.com"), "h")?;
        assert!(wild.matches("api.example.com"));
        assert!(!wild.matches("example.com"));
        assert!(!wild.matches("a.b.example.com"));
        assert!(!wild.matches("evilexample.com"));
        assert!(HostMatch::compile(Some("bad host"), "h").is_err());
        Ok(())
    }
}
