//! A Dockerfile parser: parser directives (`# escape=`), comments, line
//! continuations, instructions with `--flag=value` options, exec (JSON) and
//! shell forms. Heredocs are refused by name. Word splitting, quotes and
//! `$VAR` / `${VAR:-default}` / `${VAR:+alt}` expansion are in [`words`].

use crate::error::{BuildError, Result};
use std::collections::HashMap;

/// The instructions cubby knows (ONBUILD is refused when evaluated).
const KNOWN: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "MAINTAINER",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    /// `["a", "b"]`
    Exec(Vec<String>),
    /// Everything after the keyword and flags, continuations joined.
    Shell(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line of the keyword.
    pub line: usize,
    /// Upper case.
    pub keyword: String,
    /// `--name=value` options before the arguments, in order.
    pub flags: Vec<(String, String)>,
    pub args: Args,
    /// The instruction as written (continuations joined), for history.
    pub original: String,
}

impl Instruction {
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn syntax(&self, msg: impl Into<String>) -> BuildError {
        BuildError::Syntax {
            line: self.line,
            msg: msg.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Dockerfile {
    pub escape: char,
    pub instructions: Vec<Instruction>,
}

/// Parses a whole Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile> {
    let mut escape = '\\';
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    // Parser directives: `# key=value` lines at the very top.
    while i < lines.len() {
        let Some(rest) = lines[i].trim().strip_prefix('#') else {
            break;
        };
        let Some((k, v)) = rest.split_once('=') else {
            break;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k.contains(char::is_whitespace) {
            break;
        }
        match k.as_str() {
            "escape" => {
                escape = match v {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(BuildError::Syntax {
                            line: i + 1,
                            msg: format!("invalid escape directive {v:?}: use \\ or `"),
                        })
                    }
                }
            }
            "syntax" | "check" => {}
            _ => break,
        }
        i += 1;
    }
    let mut out = Vec::new();
    while i < lines.len() {
        let start = i;
        let first = lines[i].trim_start();
        i += 1;
        if first.is_empty() || first.starts_with('#') {
            continue;
        }
        // Join continuations; comment and blank lines inside are dropped.
        let mut joined = String::new();
        let mut cur = first.to_string();
        loop {
            let trimmed = cur.trim_end();
            if let Some(body) = trimmed.strip_suffix(escape) {
                joined.push_str(body);
                let mut next = None;
                while i < lines.len() {
                    let l = lines[i];
                    i += 1;
                    let t = l.trim_start();
                    if t.starts_with('#') || t.is_empty() {
                        continue;
                    }
                    next = Some(l.to_string());
                    break;
                }
                match next {
                    Some(n) => cur = n,
                    None => break,
                }
            } else {
                joined.push_str(&cur);
                break;
            }
        }
        out.push(parse_instruction(start + 1, joined.trim(), escape)?);
    }
    Ok(Dockerfile {
        escape,
        instructions: out,
    })
}

fn parse_instruction(line: usize, text: &str, escape: char) -> Result<Instruction> {
    let err = |msg: String| BuildError::Syntax { line, msg };
    let (word, mut rest) = match text.find(char::is_whitespace) {
        Some(p) => (&text[..p], text[p..].trim_start()),
        None => (text, ""),
    };
    let keyword = word.to_ascii_uppercase();
    if !KNOWN.contains(&keyword.as_str()) {
        return Err(err(format!("unknown instruction: {word}")));
    }
    let mut flags = Vec::new();
    if matches!(
        keyword.as_str(),
        "FROM" | "RUN" | "COPY" | "ADD" | "HEALTHCHECK"
    ) {
        while let Some(f) = rest.strip_prefix("--") {
            let end = f.find(char::is_whitespace).unwrap_or(f.len());
            let (name, value) = match f[..end].split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => (f[..end].to_string(), "true".to_string()),
            };
            if name.is_empty() {
                return Err(err("empty flag name".into()));
            }
            flags.push((name, value));
            rest = f[end..].trim_start();
        }
    }
    if matches!(keyword.as_str(), "RUN" | "COPY" | "ADD") && has_heredoc(rest) {
        return Err(err(format!(
            "heredocs (<<EOF) are not supported by cubby build; write the {keyword} on one line or COPY a file"
        )));
    }
    let args = if rest.starts_with('[') {
        match serde_json::from_str::<Vec<String>>(rest) {
            Ok(v) => Args::Exec(v),
            Err(_) => Args::Shell(rest.to_string()),
        }
    } else {
        Args::Shell(rest.to_string())
    };
    let needs_args = !matches!(keyword.as_str(), "CMD" | "ENTRYPOINT" | "SHELL");
    if needs_args && matches!(&args, Args::Shell(s) if s.is_empty()) {
        return Err(err(format!("{keyword} requires at least one argument")));
    }
    let _ = escape;
    Ok(Instruction {
        line,
        keyword,
        flags,
        args,
        original: text.to_string(),
    })
}

/// `<<EOF`, `<<-EOF`, `<<"EOF"` as a word (not `<<` inside quotes or a
/// here-string `<<<`).
fn has_heredoc(s: &str) -> bool {
    let b = s.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'\'' || c == b'"' => quote = Some(c),
            None if c == b'<' && b.get(i + 1) == Some(&b'<') && b.get(i + 2) != Some(&b'<') => {
                if i > 0 && b[i - 1] == b'<' {
                    i += 1;
                    continue;
                }
                let mut j = i + 2;
                if b.get(j) == Some(&b'-') {
                    j += 1;
                }
                if matches!(b.get(j), Some(&b'"') | Some(&b'\'')) {
                    j += 1;
                }
                if b.get(j)
                    .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
                {
                    return true;
                }
            }
            None => {}
        }
        i += 1;
    }
    false
}

/// Shell-like words: quotes removed, escapes applied, variables expanded
/// from `vars` (unset ones are empty), single quotes literal.
pub fn words(s: &str, escape: char, vars: &HashMap<String, String>) -> Result<Vec<String>> {
    lex(s, escape, vars, true)
}

/// [`words`] without splitting: one string (WORKDIR, USER, ...).
pub fn expand(s: &str, escape: char, vars: &HashMap<String, String>) -> Result<String> {
    Ok(lex(s, escape, vars, false)?
        .into_iter()
        .next()
        .unwrap_or_default())
}

fn lex(s: &str, escape: char, vars: &HashMap<String, String>, split: bool) -> Result<Vec<String>> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut i = 0;
    let mut quote: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some('\'') => {
                if c == '\'' {
                    quote = None;
                } else {
                    cur.push(c);
                }
                i += 1;
            }
            q => {
                if c == escape && i + 1 < chars.len() {
                    let n = chars[i + 1];
                    // Inside double quotes only \" \\ \$ are escapes.
                    if q == Some('"') && !matches!(n, '"' | '$') && n != escape {
                        cur.push(c);
                    }
                    cur.push(n);
                    in_word = true;
                    i += 2;
                    continue;
                }
                if c == '$' {
                    let (val, used) = variable(&chars[i..], vars)?;
                    i += used;
                    if split && q.is_none() {
                        // Unquoted expansions split into words, as in a shell.
                        let mut parts = val.split(char::is_whitespace).peekable();
                        while let Some(p) = parts.next() {
                            cur.push_str(p);
                            in_word |= !p.is_empty();
                            if parts.peek().is_some() && in_word {
                                out.push(std::mem::take(&mut cur));
                                in_word = false;
                            }
                        }
                    } else {
                        cur.push_str(&val);
                        in_word = true;
                    }
                    continue;
                }
                if q == Some('"') {
                    if c == '"' {
                        quote = None;
                    } else {
                        cur.push(c);
                    }
                } else if c == '"' || c == '\'' {
                    quote = Some(c);
                    in_word = true;
                } else if split && c.is_whitespace() {
                    if in_word {
                        out.push(std::mem::take(&mut cur));
                        in_word = false;
                    }
                } else {
                    cur.push(c);
                    in_word = true;
                }
                i += 1;
            }
        }
    }
    if quote.is_some() {
        return Err(BuildError::invalid(format!("unterminated quote in {s:?}")));
    }
    if in_word || !split {
        out.push(cur);
    }
    Ok(out)
}

/// `$NAME`, `${NAME}`, `${NAME:-word}`, `${NAME:+word}` at the start of
/// `c`: the value and the chars consumed.
fn variable(c: &[char], vars: &HashMap<String, String>) -> Result<(String, usize)> {
    let is_name = |ch: char| ch.is_ascii_alphanumeric() || ch == '_';
    if c.get(1) == Some(&'{') {
        let Some(end) = c.iter().position(|&ch| ch == '}') else {
            return Err(BuildError::invalid("missing '}' in variable substitution"));
        };
        let inner: String = c[2..end].iter().collect();
        let (name, op) = match inner.find(|ch: char| !is_name(ch)) {
            Some(p) => (&inner[..p], Some(&inner[p..])),
            None => (inner.as_str(), None),
        };
        let val = vars.get(name).cloned();
        let result = match op {
            None => val.unwrap_or_default(),
            Some(op) if op.starts_with(":-") => val
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| op[2..].to_string()),
            Some(op) if op.starts_with(":+") => match val {
                Some(v) if !v.is_empty() => op[2..].to_string(),
                _ => String::new(),
            },
            Some(op) => {
                return Err(BuildError::Unsupported(format!(
                    "the substitution ${{{name}{op}}} (only ${{V}}, ${{V:-word}}, ${{V:+word}})"
                )))
            }
        };
        return Ok((result, end + 1));
    }
    let len = c[1..].iter().take_while(|ch| is_name(**ch)).count();
    if len == 0 {
        return Ok(("$".into(), 1));
    }
    let name: String = c[1..1 + len].iter().collect();
    Ok((vars.get(&name).cloned().unwrap_or_default(), 1 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn real_dockerfile() {
        let df = parse(
            "# syntax=docker/dockerfile:1\nARG BASE=busybox\nFROM ${BASE} AS build\n\n# a comment\nRUN echo a \\\n  # inner comment\n  && echo b\nCOPY --from=build --chown=1:2 /a /b\nCMD [\"sh\", \"-c\", \"echo hi\"]\nENTRYPOINT echo x\n",
        )
        .unwrap();
        let k: Vec<&str> = df.instructions.iter().map(|i| i.keyword.as_str()).collect();
        assert_eq!(k, ["ARG", "FROM", "RUN", "COPY", "CMD", "ENTRYPOINT"]);
        assert_eq!(df.instructions[1].line, 3);
        assert_eq!(
            df.instructions[2].args,
            Args::Shell("echo a   && echo b".into())
        );
        assert_eq!(df.instructions[3].flag("from"), Some("build"));
        assert_eq!(df.instructions[3].flag("chown"), Some("1:2"));
        assert_eq!(
            df.instructions[4].args,
            Args::Exec(vec!["sh".into(), "-c".into(), "echo hi".into()])
        );
        assert_eq!(df.instructions[5].args, Args::Shell("echo x".into()));
    }

    #[test]
    fn escape_directive() {
        let df = parse("# escape=`\nFROM scratch\nCOPY a `\n  c:\\dir\\\n").unwrap();
        assert_eq!(df.escape, '`');
        assert_eq!(df.instructions[1].args, Args::Shell("a   c:\\dir\\".into()));
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("FROM busybox\n\nFOO bar\n").unwrap_err().to_string();
        assert!(
            e.contains("line 3") && e.contains("unknown instruction: FOO"),
            "{e}"
        );
        let e = parse("FROM busybox\nRUN <<EOF\necho\nEOF\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("heredoc"), "{e}");
        let e = parse("FROM busybox\nWORKDIR\n").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        // `<<<` and `<<` in quotes are not heredocs.
        parse("FROM a\nRUN cat <<< hi\nRUN echo '<<EOF'\n").unwrap();
    }

    #[test]
    fn invalid_json_is_shell_form() {
        let df = parse("FROM a\nCMD [not json\n").unwrap();
        assert_eq!(df.instructions[1].args, Args::Shell("[not json".into()));
    }

    #[test]
    fn expansion() {
        let v = vars(&[("A", "x y"), ("E", "")]);
        assert_eq!(
            words("$A \"$A\" '$A' ${A}z ${E:-d} ${A:+set} \\$A", '\\', &v).unwrap(),
            ["x", "y", "x y", "$A", "x", "yz", "d", "set", "$A"]
        );
        assert_eq!(words("k=\"a b\" c=d", '\\', &v).unwrap(), ["k=a b", "c=d"]);
        assert_eq!(expand("/srv/$A", '\\', &v).unwrap(), "/srv/x y");
        assert!(words("'open", '\\', &v).is_err());
    }
}
