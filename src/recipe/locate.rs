//! Best-effort source locations for field paths (`provisioners[2].script`).
//!
//! YAML: block-style keys and `- ` items are followed by indentation; a
//! path into a flow collection (`{...}`, `[...]`) stops at the line holding
//! it. JSON: a small scanner walks the document. Both return the deepest
//! part of the path found, so a location is approximate rather than wrong.

use super::Format;

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// Appends a key to a field path: `a.b`, or `a["odd key"]` for keys that
/// are not plain words.
pub(crate) fn field_key(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{key:?}]"),
    }
}

/// Appends an index to a field path: `a[3]`.
pub(crate) fn field_index(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// Splits a field path into steps.
pub(crate) fn parse_path(field: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    let mut key = String::new();
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                if !key.is_empty() {
                    segs.push(Seg::Key(std::mem::take(&mut key)));
                }
            }
            '[' => {
                if !key.is_empty() {
                    segs.push(Seg::Key(std::mem::take(&mut key)));
                }
                if chars.peek() == Some(&'"') {
                    chars.next();
                    let mut quoted = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => quoted.extend(chars.next()),
                            '"' => break,
                            c => quoted.push(c),
                        }
                    }
                    chars.next(); // the closing ']'
                    segs.push(Seg::Key(quoted));
                } else {
                    let inner: String = chars.by_ref().take_while(|c| *c != ']').collect();
                    match inner.parse::<usize>() {
                        Ok(i) => segs.push(Seg::Index(i)),
                        Err(_) => segs.push(Seg::Key(inner)),
                    }
                }
            }
            _ => key.push(c),
        }
    }
    if !key.is_empty() {
        segs.push(Seg::Key(key));
    }
    segs
}

/// 1-based line and column of `field` in `text`, as deep as it is found.
pub(crate) fn locate(text: &str, format: Format, field: &str) -> Option<(usize, usize)> {
    let segs = parse_path(field);
    if segs.is_empty() {
        return None;
    }
    match format {
        Format::Yaml => locate_yaml(text, &segs),
        Format::Json => locate_json(text, &segs),
    }
}

#[derive(Clone, Copy)]
struct Line<'a> {
    no: usize,
    indent: usize,
    text: &'a str,
}

fn yaml_lines(text: &str) -> Vec<Line<'_>> {
    text.lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let trimmed = raw.trim_start_matches(' ');
            let content = trimmed.trim_end();
            (!content.is_empty() && !content.starts_with('#') && content != "---").then_some(Line {
                no: i + 1,
                indent: raw.len() - trimmed.len(),
                text: content,
            })
        })
        .collect()
}

fn is_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

/// The key of a `key: value` line, unquoted.
fn yaml_key(text: &str) -> Option<&str> {
    if let Some(q) = text.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let rest = &text[1..];
        let end = rest.find(q)?;
        return rest[end + 1..]
            .trim_start()
            .starts_with(':')
            .then(|| &rest[..end]);
    }
    let colon = text.find(':')?;
    let after = &text[colon + 1..];
    (after.is_empty() || after.starts_with(' ')).then(|| text[..colon].trim_end())
}

/// Column offset of `key:` inside a flow collection on `text`, searching
/// from `from`; the key must follow `{`, `,` or a space.
fn find_flow_key(text: &str, key: &str, from: usize) -> Option<usize> {
    let needle = format!("{key}:");
    let mut start = from;
    while let Some(pos) = text.get(start..).and_then(|t| t.find(&needle)) {
        let at = start + pos;
        let before = text[..at].chars().last();
        if matches!(before, Some('{' | ',' | ' ' | '"' | '\'')) {
            return Some(at);
        }
        start = at + needle.len();
    }
    None
}

fn locate_yaml(text: &str, segs: &[Seg]) -> Option<(usize, usize)> {
    let mut region = yaml_lines(text);
    let mut best: Option<(usize, usize)> = None;
    let mut last_line: Option<Line> = None;
    for seg in segs {
        let base = region.first().map(|l| l.indent);
        let at_base = |l: &Line| Some(l.indent) == base;
        let idx = match seg {
            Seg::Key(k) => region
                .iter()
                .position(|l| at_base(l) && yaml_key(l.text) == Some(k.as_str())),
            Seg::Index(i) => region
                .iter()
                .enumerate()
                .filter(|(_, l)| at_base(l) && is_item(l.text))
                .nth(*i)
                .map(|(pos, _)| pos),
        };
        let Some(idx) = idx else {
            // The value may be inline (flow style): look for `key:` on the
            // line of the previous step, after its own key.
            if let (Seg::Key(k), Some(line)) = (seg, last_line) {
                let from = line.text.find(':').map_or(0, |c| c + 1);
                let from = if line.text.starts_with('-') { 1 } else { from };
                if let Some(pos) = find_flow_key(line.text, k, from) {
                    return Some((line.no, line.indent + pos + 1));
                }
            }
            return best;
        };
        let line = region[idx];
        best = Some((line.no, line.indent + 1));
        last_line = Some(line);
        let mut child: Vec<Line> = Vec::new();
        if let Seg::Index(_) = seg {
            let rest = line.text[1..].trim_start();
            if !rest.is_empty() {
                child.push(Line {
                    no: line.no,
                    indent: line.indent + (line.text.len() - rest.len()),
                    text: rest,
                });
            }
        }
        for l in &region[idx + 1..] {
            let inside = l.indent > line.indent
                || (matches!(seg, Seg::Key(_)) && l.indent == line.indent && is_item(l.text));
            if !inside {
                break;
            }
            child.push(*l);
        }
        region = child;
    }
    best
}

fn locate_json(text: &str, segs: &[Seg]) -> Option<(usize, usize)> {
    let mut scanner = Scanner {
        bytes: text.as_bytes(),
        pos: 0,
        target: segs,
        best: None,
    };
    let mut path = Vec::new();
    let _ = scanner.value(&mut path);
    let (_, offset) = scanner.best?;
    let before = text.get(..offset)?;
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Some((line, column))
}

struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
    target: &'a [Seg],
    best: Option<(usize, usize)>,
}

/// `Err(())` stops the scan: the target was found or the JSON is malformed.
type Step = Result<(), ()>;

impl Scanner<'_> {
    fn note(&mut self, path: &[Seg], offset: usize) -> Step {
        if path.len() <= self.target.len() && self.target[..path.len()] == *path {
            if self.best.is_none_or(|(depth, _)| path.len() > depth) {
                self.best = Some((path.len(), offset));
            }
            if path.len() == self.target.len() {
                return Err(());
            }
        }
        Ok(())
    }

    fn skip_ws(&mut self) {
        while self.pos < self.bytes.len() && self.bytes[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn string(&mut self) -> Result<String, ()> {
        let start = self.pos + 1;
        let mut i = start;
        while i < self.bytes.len() {
            match self.bytes[i] {
                b'\\' => i += 2,
                b'"' => {
                    self.pos = i + 1;
                    let raw = std::str::from_utf8(&self.bytes[start..i]).map_err(|_| ())?;
                    return Ok(raw.replace("\\\"", "\""));
                }
                _ => i += 1,
            }
        }
        Err(())
    }

    fn value(&mut self, path: &mut Vec<Seg>) -> Step {
        self.skip_ws();
        match self.peek().ok_or(())? {
            b'{' => {
                self.pos += 1;
                loop {
                    self.skip_ws();
                    match self.peek().ok_or(())? {
                        b'}' => {
                            self.pos += 1;
                            return Ok(());
                        }
                        b',' => self.pos += 1,
                        b'"' => {
                            let at = self.pos;
                            let key = self.string()?;
                            path.push(Seg::Key(key));
                            self.note(path, at)?;
                            self.skip_ws();
                            if self.peek() != Some(b':') {
                                return Err(());
                            }
                            self.pos += 1;
                            self.value(path)?;
                            path.pop();
                        }
                        _ => return Err(()),
                    }
                }
            }
            b'[' => {
                self.pos += 1;
                let mut index = 0;
                loop {
                    self.skip_ws();
                    match self.peek().ok_or(())? {
                        b']' => {
                            self.pos += 1;
                            return Ok(());
                        }
                        b',' => self.pos += 1,
                        _ => {
                            path.push(Seg::Index(index));
                            self.note(path, self.pos)?;
                            self.value(path)?;
                            path.pop();
                            index += 1;
                        }
                    }
                }
            }
            b'"' => self.string().map(|_| ()),
            _ => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|b| !matches!(b, b',' | b'}' | b']') && !b.is_ascii_whitespace())
                {
                    self.pos += 1;
                }
                // A value that is nothing (`[}`) is malformed; stopping here
                // also keeps every loop above moving forward.
                if self.pos == start {
                    Err(())
                } else {
                    Ok(())
                }
            }
        }
    }
}
