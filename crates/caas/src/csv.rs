//! The CSV files operators and teachers import: one record per line, comma
//! separated, no quoting (names and roles never need it). A header line
//! naming the columns is allowed. Every error names its line.

use crate::error::{Error, Result};
use crate::store::users::{check_username, Role};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvUser {
    pub line: usize,
    pub username: String,
    pub role: Option<Role>,
    pub password: Option<String>,
}

/// `username[,role][,password]` per line; `roles` says whether the role
/// column is present (users import) or not (class roster: `username[,password]`).
pub fn parse_users(text: &str, with_role: bool) -> Result<Vec<CsvUser>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if l.contains('"') {
            return Err(Error::Invalid(format!(
                "CSV line {line}: quotes are not supported; names and roles never need them"
            )));
        }
        let cols: Vec<&str> = l.split(',').map(str::trim).collect();
        if out.is_empty()
            && cols
                .first()
                .is_some_and(|c| c.eq_ignore_ascii_case("username"))
        {
            continue; // header
        }
        let max = if with_role { 3 } else { 2 };
        if cols.len() > max {
            let want = if with_role {
                "username,role[,password]"
            } else {
                "username[,password]"
            };
            return Err(Error::Invalid(format!(
                "CSV line {line}: {} columns; use {want}",
                cols.len()
            )));
        }
        let username = cols[0].to_string();
        check_username(&username).map_err(|e| Error::Invalid(format!("CSV line {line}: {e}")))?;
        let (role, pw) = if with_role {
            let role = cols.get(1).ok_or_else(|| {
                Error::Invalid(format!(
                    "CSV line {line}: no role; use username,role[,password]"
                ))
            })?;
            (
                Some(
                    Role::parse(role)
                        .map_err(|e| Error::Invalid(format!("CSV line {line}: {e}")))?,
                ),
                cols.get(2),
            )
        } else {
            (None, cols.get(1))
        };
        let password = pw.filter(|p| !p.is_empty()).map(|p| p.to_string());
        if let Some(p) = &password {
            crate::auth::check_password_strength(p)
                .map_err(|e| Error::Invalid(format!("CSV line {line}: {e}")))?;
        }
        if out.iter().any(|u: &CsvUser| u.username == username) {
            return Err(Error::Invalid(format!(
                "CSV line {line}: {username} appears twice"
            )));
        }
        out.push(CsvUser {
            line,
            username,
            role,
            password,
        });
    }
    if out.is_empty() {
        return Err(Error::Invalid("the CSV has no records".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_bad_lines() {
        let u = parse_users(
            "username,role,password\nann,student,password1\n\nbob,teacher\n",
            true,
        )
        .unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(u[1].role, Some(Role::Teacher));
        assert_eq!(u[1].password, None);
        let e = parse_users("ann,student,pw1\n", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("password"), "{e}");
        let e = parse_users("ann,student,password1\nb b,student\n", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = parse_users("ann,wizard\n", true).unwrap_err().to_string();
        assert!(e.contains("role"), "{e}");
        assert!(parse_users("ann\nann\n", false).is_err());
        assert_eq!(parse_users("ann\nbob,password1\n", false).unwrap().len(), 2);
    }
}
