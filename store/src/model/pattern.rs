//! Mapping-rule path patterns, with 3scale semantics: a pattern matches
//! every path it is a prefix of, unless it ends with `$`; `{name}` matches
//! one or more characters of a single path segment.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    Param,
}

/// A parsed, validated pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    tokens: Vec<Token>,
    anchored: bool,
}

impl PathPattern {
    pub fn parse(pattern: &str) -> Result<PathPattern, String> {
        if !pattern.starts_with('/') {
            return Err(format!("pattern `{pattern}` must start with `/`"));
        }
        let (body, anchored) = match pattern.strip_suffix('$') {
            Some(body) => (body, true),
            None => (pattern, false),
        };
        if body.contains('$') {
            return Err(format!("`$` may only end the pattern `{pattern}`"));
        }
        if body.contains('?') || body.contains('#') {
            return Err(format!(
                "pattern `{pattern}` has a query string; patterns match paths only"
            ));
        }
        if body.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err(format!("pattern `{pattern}` contains whitespace"));
        }
        let mut tokens = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                Some(0) if rest.starts_with('}') => {
                    return Err(format!("unmatched `}}` in pattern `{pattern}`"));
                }
                Some(0) => {
                    let close = rest
                        .find('}')
                        .ok_or_else(|| format!("unclosed `{{` in pattern `{pattern}`"))?;
                    let name = &rest[1..close];
                    if name.is_empty()
                        || !name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    {
                        return Err(format!(
                            "parameter `{{{name}}}` in pattern `{pattern}` needs a name of letters, digits, `_` or `-`"
                        ));
                    }
                    if tokens.last() == Some(&Token::Param) {
                        return Err(format!(
                            "two parameters in a row in pattern `{pattern}` cannot be told apart"
                        ));
                    }
                    tokens.push(Token::Param);
                    rest = &rest[close + 1..];
                }
                Some(at) => {
                    tokens.push(Token::Literal(rest[..at].to_owned()));
                    rest = &rest[at..];
                }
                None => {
                    tokens.push(Token::Literal(rest.to_owned()));
                    rest = "";
                }
            }
        }
        Ok(PathPattern { tokens, anchored })
    }

    /// Whether `path` (without its query string) matches.
    pub fn matches(&self, path: &str) -> bool {
        match_tokens(&self.tokens, path, self.anchored)
    }
}

fn match_tokens(tokens: &[Token], path: &str, anchored: bool) -> bool {
    match tokens.split_first() {
        None => !anchored || path.is_empty(),
        Some((Token::Literal(literal), rest)) => path
            .strip_prefix(literal.as_str())
            .is_some_and(|tail| match_tokens(rest, tail, anchored)),
        Some((Token::Param, rest)) => {
            let segment_len = path.find('/').unwrap_or(path.len());
            // Shortest first, so `/{id}.json` leaves `.json` to the literal.
            (1..=segment_len)
                .filter(|&len| path.is_char_boundary(len))
                .any(|len| match_tokens(rest, &path[len..], anchored))
        }
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for token in &self.tokens {
            match token {
                Token::Literal(text) => f.write_str(text)?,
                Token::Param => f.write_str("{param}")?,
            }
        }
        if self.anchored {
            f.write_str("$")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, path: &str) -> bool {
        PathPattern::parse(pattern).unwrap().matches(path)
    }

    #[test]
    fn prefix_semantics_without_anchor() {
        assert!(matches("/v1/models", "/v1/models"));
        assert!(matches("/v1/models", "/v1/models/granite"));
        assert!(matches("/", "/anything"));
        assert!(!matches("/v1/models", "/v1/model"));
    }

    #[test]
    fn anchor_requires_the_whole_path() {
        assert!(matches("/v1/models$", "/v1/models"));
        assert!(!matches("/v1/models$", "/v1/models/x"));
    }

    #[test]
    fn params_match_one_segment() {
        assert!(matches("/v1/models/{id}$", "/v1/models/granite-7b"));
        assert!(!matches("/v1/models/{id}$", "/v1/models/a/b"));
        assert!(!matches("/v1/models/{id}", "/v1/models/"));
        assert!(matches("/files/{id}.json$", "/files/abc.json"));
        assert!(matches("/a/{x}/c/{y}$", "/a/1/c/ü"));
    }

    #[test]
    fn bad_patterns_are_explained() {
        for bad in [
            "v1", "/a$/b", "/a/{", "/a/}", "/a/{}", "/a/{x y}", "/a?b=1", "/{a}{b}", "/a b",
        ] {
            assert!(PathPattern::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
