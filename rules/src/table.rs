//! Two-column lookup tables in CSV files (the component registry, route tables), read with
//! the `csv` crate: quoted fields (`"Qingdao Gas, Shibei branch"`), a UTF-8 byte-order
//! mark, CRLF line ends and `#` comment lines all work as a spreadsheet would write them.

use std::path::Path;

/// One row of a table: its line in the file and its two values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// 1-based line number.
    pub line: u64,
    /// Value of the first named column (the key).
    pub key: String,
    /// Value of the second named column.
    pub value: String,
}

/// Reads the columns `names` of a CSV file. With `header_required`, the first row must be a
/// header naming both columns (in any order, among others); otherwise a first row equal to
/// the names is skipped as a header and the columns are the first two. Every other row
/// must have both values. The error names the line.
pub fn read_pairs(path: &Path, names: [&str; 2], header_required: bool) -> Result<Vec<Row>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .flexible(true)
        .from_path(path)
        .map_err(|e| e.to_string())?;
    let mut records = reader.records();
    let mut rows = Vec::new();
    let mut columns = (0, 1);
    let mut width = names.len();
    let mut first = true;
    for record in &mut records {
        let record = record.map_err(describe)?;
        let line = record.position().map_or(0, csv::Position::line);
        if record.iter().all(str::is_empty) {
            continue;
        }
        if std::mem::take(&mut first) {
            let position = |name: &str| record.iter().position(|c| c.trim_start_matches('\u{feff}') == name);
            match (position(names[0]), position(names[1])) {
                (Some(a), Some(b)) => {
                    columns = (a, b);
                    width = record.len();
                    continue;
                }
                (a, _) if header_required => {
                    let missing = if a.is_none() { names[0] } else { names[1] };
                    return Err(format!(
                        "line {line}: the header has no `{missing}` column (expected `{}`)",
                        names.join(",")
                    ));
                }
                _ => {}
            }
        }
        if record.len() > width {
            let found: Vec<&str> = record.iter().collect();
            return Err(format!(
                "line {line}: {} fields where the header has {width}: {found:?} (quote values that contain commas: \"a, b\")",
                record.len()
            ));
        }
        let get = |i: usize| record.get(i).filter(|v| !v.is_empty()).map(str::to_string);
        match (get(columns.0), get(columns.1)) {
            (Some(key), Some(value)) => rows.push(Row { line, key, value }),
            _ => {
                let found: Vec<&str> = record.iter().collect();
                return Err(format!(
                    "line {line}: needs both `{}` and `{}`, found {found:?} (quote values that contain commas)",
                    names[0], names[1]
                ));
            }
        }
    }
    if first && header_required {
        return Err(format!("the file is empty: expected a header `{}`", names.join(",")));
    }
    Ok(rows)
}

fn describe(e: csv::Error) -> String {
    match e.position() {
        Some(p) => format!("line {}: {e}", p.line()),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &[u8], header: bool) -> Result<Vec<(String, String)>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, text).unwrap();
        read_pairs(&path, ["component_id", "owner"], header)
            .map(|rows| rows.into_iter().map(|r| (r.key, r.value)).collect())
    }

    #[test]
    fn quotes_bom_crlf_comments_and_extra_columns() {
        let text = "\u{feff}# owners\r\nkind,component_id,owner\r\ngas,gas-1,\"Qingdao Gas, Shibei branch\"\r\n\r\nwater,w-2,\"Water \"\"A\"\"\"\r\n";
        assert_eq!(
            read(text.as_bytes(), true),
            Ok(vec![("gas-1".into(), "Qingdao Gas, Shibei branch".into()), ("w-2".into(), "Water \"A\"".into())])
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = read(b"component_id,owner\ngas-1,Gas\ngas-2\n", true).unwrap_err();
        assert!(e.starts_with("line 3: needs both `component_id` and `owner`"), "{e}");
        let e = read(b"id,owner\ngas-1,Gas\n", true).unwrap_err();
        assert!(e.contains("no `component_id` column"), "{e}");
        let e = read(b"component_id,owner\n\"gas-1,Gas\n", true).unwrap_err();
        assert!(e.contains("line"), "an unclosed quote: {e}");
        assert!(read(b"", true).unwrap_err().contains("empty"));
        let e = read(b"component_id,owner\ngas-1,Qingdao Gas, Shibei branch\n", true).unwrap_err();
        assert!(e.starts_with("line 2: 3 fields where the header has 2"), "an unquoted comma is not cut silently: {e}");
    }

    #[test]
    fn a_header_is_optional_where_allowed() {
        assert_eq!(read(b"a,b\nc,d\n", false), Ok(vec![("a".into(), "b".into()), ("c".into(), "d".into())]));
        assert_eq!(read(b"component_id,owner\nc,d\n", false), Ok(vec![("c".into(), "d".into())]));
    }
}
