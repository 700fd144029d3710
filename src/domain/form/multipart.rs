//! A `multipart/form-data` body (RFC 7578, over RFC 2046's boundary format), already in memory.
//!
//! Decides: the named parts of a body and their bytes. Never does: any decoding of a part's
//! bytes, streaming, or any limit of its own (the body is at most [`super::MAX_BODY_BYTES`]).
//!
//! Hand-written on purpose: the whole body is buffered and small, only text parts matter, and
//! the crates that parse multipart are either async and heavy for a Worker (multer) or young,
//! with little record yet (nostd-multipart, form-net). What is read: the parts between
//! `--boundary` lines (a preamble and an epilogue are skipped), each with CRLF-separated headers
//! of which only `Content-Disposition: form-data; name="..."; filename="..."` matters.

use memchr::memmem;

use super::FormError;

/// Most parts read from one body: more is not a form.
const MAX_PARTS: usize = 512;

/// One part of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Part<'a> {
    pub name: String,
    /// Present for an uploaded file.
    pub filename: Option<String>,
    pub body: &'a [u8],
}

pub(super) fn parse<'a>(boundary: &[u8], body: &'a [u8]) -> Result<Vec<Part<'a>>, FormError> {
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(boundary);
    // Between parts, the delimiter always follows a line break.
    let mut between = b"\r\n".to_vec();
    between.extend_from_slice(&delimiter);

    let mut at = if body.starts_with(&delimiter) {
        delimiter.len()
    } else {
        memmem::find(body, &between).ok_or(FormError::MalformedMultipart)? + between.len()
    };
    let mut parts = Vec::new();
    loop {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        // Transport padding may follow a delimiter before its line break.
        let padding = rest
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count();
        let rest = rest[padding..]
            .strip_prefix(b"\r\n")
            .ok_or(FormError::MalformedMultipart)?;
        let head_len = memmem::find(rest, b"\r\n\r\n").ok_or(FormError::MalformedMultipart)?;
        let (name, filename) = disposition(&rest[..head_len])?;
        let content = &rest[head_len + 4..];
        let end = memmem::find(content, &between).ok_or(FormError::MalformedMultipart)?;
        parts.push(Part {
            name,
            filename,
            body: &content[..end],
        });
        if parts.len() > MAX_PARTS {
            return Err(FormError::MalformedMultipart);
        }
        at = body.len() - content.len() + end + between.len();
    }
}

/// The `name` and `filename` of a part, from its `Content-Disposition` header.
fn disposition(head: &[u8]) -> Result<(String, Option<String>), FormError> {
    let head = std::str::from_utf8(head).map_err(|_| FormError::InvalidUtf8)?;
    let value = head
        .split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-disposition"))
        .map(|(_, v)| v)
        .ok_or(FormError::MalformedMultipart)?;
    let mut params = Params(value);
    let kind = params.token().ok_or(FormError::MalformedMultipart)?;
    if !kind.eq_ignore_ascii_case("form-data") {
        return Err(FormError::MalformedMultipart);
    }
    let (mut name, mut filename) = (None, None);
    while let Some((key, v)) = params.next_param()? {
        if key.eq_ignore_ascii_case("name") {
            name = Some(v);
        } else if key.eq_ignore_ascii_case("filename") {
            filename = Some(v);
        }
    }
    Ok((name.ok_or(FormError::MalformedMultipart)?, filename))
}

/// A reader of `token *(; key=value)` where a value is a token or a quoted string.
struct Params<'a>(&'a str);

impl<'a> Params<'a> {
    fn token(&mut self) -> Option<&'a str> {
        let s = self.0.trim_start();
        let end = s.find([';', '=']).unwrap_or(s.len());
        let (token, rest) = s.split_at(end);
        self.0 = rest;
        let token = token.trim();
        (!token.is_empty()).then_some(token)
    }

    fn next_param(&mut self) -> Result<Option<(&'a str, String)>, FormError> {
        let s = self.0.trim_start();
        let Some(s) = s.strip_prefix(';') else {
            return if s.is_empty() {
                Ok(None)
            } else {
                Err(FormError::MalformedMultipart)
            };
        };
        self.0 = s;
        let key = self.token().ok_or(FormError::MalformedMultipart)?;
        let s = self.0.trim_start();
        let s = s.strip_prefix('=').ok_or(FormError::MalformedMultipart)?;
        let s = s.trim_start();
        if let Some(quoted) = s.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        self.0 = &quoted[i + 1..];
                        return Ok(Some((key, value)));
                    }
                    '\\' => value.push(chars.next().ok_or(FormError::MalformedMultipart)?.1),
                    c => value.push(c),
                }
            }
            Err(FormError::MalformedMultipart)
        } else {
            let end = s.find(';').unwrap_or(s.len());
            self.0 = &s[end..];
            Ok(Some((key, s[..end].trim().to_owned())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(parts: &[Part]) -> Vec<(String, String)> {
        parts
            .iter()
            .map(|p| (p.name.clone(), String::from_utf8_lossy(p.body).into_owned()))
            .collect()
    }

    #[test]
    fn parts_are_read_between_boundaries() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\none\r\n\
            --XyZ\r\ncontent-disposition: form-data; name=b\r\nContent-Type: text/plain\r\n\r\n\
            two\r\nlines\r\n--XyZ--\r\n";
        let parts = parse(b"XyZ", body).unwrap();
        assert_eq!(
            names(&parts),
            [
                ("a".into(), "one".into()),
                ("b".into(), "two\r\nlines".into())
            ]
        );
    }

    #[test]
    fn a_preamble_padding_and_an_epilogue_are_skipped() {
        let body = b"preamble\r\n--b  \r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n\
            --b--\r\nepilogue";
        assert_eq!(
            names(&parse(b"b", body).unwrap()),
            [("x".into(), "1".into())]
        );
    }

    #[test]
    fn quoted_names_may_hold_escapes_and_semicolons() {
        let body = b"--b\r\nContent-Disposition: form-data; name=\"q\\\"1;x\"; \
            filename=\"f.txt\"\r\n\r\ndata\r\n--b--";
        let parts = parse(b"b", body).unwrap();
        assert_eq!(parts[0].name, "q\"1;x");
        assert_eq!(parts[0].filename.as_deref(), Some("f.txt"));
    }

    #[test]
    fn an_empty_form_has_no_parts() {
        assert_eq!(parse(b"b", b"--b--\r\n").unwrap(), vec![]);
    }

    #[test]
    fn broken_bodies_are_refused() {
        for body in [
            &b""[..],
            b"no boundary here",
            b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nunterminated",
            b"--b\r\nContent-Disposition: form-data\r\n\r\nno name\r\n--b--",
            b"--b\r\nContent-Type: text/plain\r\n\r\nno disposition\r\n--b--",
            b"--b\r\nContent-Disposition: attachment; name=x\r\n\r\n1\r\n--b--",
            b"--b\r\nContent-Disposition: form-data; name=\"open\r\n\r\n1\r\n--b--",
            b"--bX\r\n",
        ] {
            assert!(
                parse(b"b", body).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
