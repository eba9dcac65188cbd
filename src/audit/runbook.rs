//! A runbook's outline: its ATX headings (`#` … `######`, outside fenced code), so that each
//! step of an audit is shown and recorded under the section it sits in.

/// One heading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heading {
    /// 1-based line.
    pub line: usize,
    /// 1 for `#`, 2 for `##`, …
    pub level: usize,
    pub title: String,
}

/// The headings of a Markdown text, in order.
pub fn headings(text: &str) -> Vec<Heading> {
    let mut out = Vec::new();
    let mut fence: Option<(char, usize)> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start_matches(' ');
        let indent = line.len() - trimmed.len();
        let run = |c: char| trimmed.chars().take_while(|x| *x == c).count();
        let (ticks, tildes) = (run('`'), run('~'));
        match fence {
            Some((c, len)) => {
                let closing = if c == '`' { ticks } else { tildes };
                if indent <= 3 && closing >= len && trimmed[closing..].trim().is_empty() {
                    fence = None;
                }
            }
            None if indent <= 3 && ticks >= 3 => fence = Some(('`', ticks)),
            None if indent <= 3 && tildes >= 3 => fence = Some(('~', tildes)),
            None if indent <= 3 => {
                let level = run('#');
                let rest = &trimmed[level..];
                if (1..=6).contains(&level) && (rest.is_empty() || rest.starts_with([' ', '\t'])) {
                    let title = rest.trim().trim_end_matches('#').trim().to_string();
                    out.push(Heading {
                        line: n + 1,
                        level,
                        title,
                    });
                }
            }
            None => {}
        }
    }
    out
}

/// The section a line sits in, as the path of its enclosing headings below the document's
/// title (`Emergency procedures › Disk full`); the title itself when the line comes before
/// any other heading, empty when there is no heading at all.
pub fn section_of(headings: &[Heading], line: usize) -> String {
    let mut path: Vec<&Heading> = Vec::new();
    for h in headings.iter().take_while(|h| h.line <= line) {
        path.retain(|p| p.level < h.level);
        path.push(h);
    }
    // The document's title (a lone top-level heading) names the runbook, not a section.
    let top = headings.iter().map(|h| h.level).min().unwrap_or(1);
    let titled = headings.iter().filter(|h| h.level == top).count() == 1;
    let shown: Vec<&str> = path
        .iter()
        .filter(|h| !(titled && h.level == top))
        .map(|h| h.title.as_str())
        .collect();
    if shown.is_empty() {
        path.first().map(|h| h.title.clone()).unwrap_or_default()
    } else {
        shown.join(" › ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# Cheatsheet\n\
        intro\n\
        ```preflight\n\
        # not a heading: inside a fence\n\
        ```\n\
        ## Emergency procedures\n\
        text\n\
        ### Disk full ###\n\
        step\n\
        ## Log analysis\n\
        ~~~\n\
        ## nor this\n\
        ~~~\n\
        #hashtag is not a heading\n\
        step\n";

    #[test]
    fn headings_outside_fences_with_their_levels() {
        let h = headings(DOC);
        let titles: Vec<(usize, usize, &str)> = h
            .iter()
            .map(|h| (h.line, h.level, h.title.as_str()))
            .collect();
        assert_eq!(
            titles,
            [
                (1, 1, "Cheatsheet"),
                (6, 2, "Emergency procedures"),
                (8, 3, "Disk full"),
                (10, 2, "Log analysis")
            ]
        );
    }

    #[test]
    fn a_line_is_in_the_path_of_its_enclosing_headings() {
        let h = headings(DOC);
        assert_eq!(section_of(&h, 3), "Cheatsheet");
        assert_eq!(section_of(&h, 7), "Emergency procedures");
        assert_eq!(section_of(&h, 9), "Emergency procedures › Disk full");
        assert_eq!(section_of(&h, 15), "Log analysis");
        assert_eq!(section_of(&[], 3), "");
    }
}
