//! Text tables of `kiln offload-report`: aligned columns for the terminal, or Markdown for docs.

/// A table of strings: the first column and those marked [`Table::left`] are left-aligned
/// (names), the others right-aligned (numbers).
pub struct Table {
    header: Vec<String>,
    left: Vec<bool>,
    /// `None` is a rule (a line of dashes before a total row); Markdown has no such thing and
    /// drops it.
    rows: Vec<Option<Vec<String>>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        let left = (0..header.len()).map(|i| i == 0).collect();
        Table { header: header.iter().map(|h| h.to_string()).collect(), left, rows: Vec::new() }
    }

    /// Left-aligns column `col` too (text, such as file names).
    pub fn left(&mut self, col: usize) {
        self.left[col] = true;
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows.push(Some(cells));
    }

    pub fn rule(&mut self) {
        self.rows.push(None);
    }

    pub fn render(&self, markdown: bool) -> String {
        if markdown {
            self.markdown()
        } else {
            self.plain()
        }
    }

    fn plain(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in self.rows.iter().flatten() {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let parts: Vec<String> = cells
                .iter()
                .zip(&widths)
                .zip(&self.left)
                .map(|((c, &w), &left)| if left { format!("{c:<w$}") } else { format!("{c:>w$}") })
                .collect();
            parts.join("  ").trim_end().to_string() + "\n"
        };
        let rule = widths.iter().map(|&w| "-".repeat(w)).collect::<Vec<_>>().join("  ") + "\n";
        let mut out = line(&self.header);
        out += &rule;
        for r in &self.rows {
            match r {
                Some(cells) => out += &line(cells),
                None => out += &rule,
            }
        }
        out
    }

    fn markdown(&self) -> String {
        // Pipes inside a cell would split it.
        let cell = |c: &String| c.replace('|', "\\|");
        let line = |cells: &[String]| format!("| {} |\n", cells.iter().map(cell).collect::<Vec<_>>().join(" | "));
        let mut out = line(&self.header);
        let align: Vec<&str> = self.left.iter().map(|&l| if l { "---" } else { "--:" }).collect();
        out += &format!("|{}|\n", align.join("|"));
        for cells in self.rows.iter().flatten() {
            out += &line(cells);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_aligns_and_markdown_escapes() {
        let mut t = Table::new(&["name", "n", "file"]);
        t.left(2);
        t.row(vec!["a".into(), "10".into(), "x".into()]);
        t.rule();
        t.row(vec!["b|c".into(), "2".into(), "yy".into()]);
        assert_eq!(t.render(false), "name   n  file\n----  --  ----\na     10  x\n----  --  ----\nb|c    2  yy\n");
        assert_eq!(t.render(true), "| name | n | file |\n|---|--:|---|\n| a | 10 | x |\n| b\\|c | 2 | yy |\n");
    }
}
