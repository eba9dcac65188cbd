//! Prometheus text exposition format: parsing samples and evaluating the small comparison
//! language of `metric` checks (`name{label="v"} >= 3`, `name{status!~"2.."} == 0`).
//!
//! Hand-written on purpose. `prometheus-parse` 0.3 (the maintained crate for this format)
//! reads label sets with the regex `\{[^}]+\}` and splits them on `,` and `=`, so a label
//! value holding `}`, `,`, `=` or an escaped quote (`path="/items/{id}"`) yields a wrong or
//! missing sample — the very false PASS/FAIL this parser exists to prevent — and it pulls in
//! chrono, itertools and lazy_static. The grammar is small: one line is
//! `name [{label="value",...}] value [timestamp] [# exemplar]`, tokens separated by blanks
//! or tabs, label values escaping `\\`, `\"` and `\n`.

use std::fmt;

/// One sample line: `name{labels} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// Milliseconds since the epoch, when the line carries one.
    pub timestamp: Option<i64>,
}

impl Sample {
    /// The value of label `key`; a missing label reads as empty, as in PromQL.
    pub fn label(&self, key: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }

    /// `name{k="v",...}` with the values escaped as in the exposition format.
    pub fn series(&self) -> String {
        let mut s = self.name.clone();
        if !self.labels.is_empty() {
            let parts: Vec<String> = self
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            s += &format!("{{{}}}", parts.join(","));
        }
        s
    }
}

/// A parsed exposition: the samples, and the lines that could not be read (1-based line
/// number and the reason), so that a missing sample can be explained rather than vanish.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    pub unreadable: Vec<(usize, String)>,
}

/// Parses the text format, skipping comments (`# HELP`, `# TYPE`, others) and the lines it
/// cannot read.
pub fn parse(text: &str) -> Vec<Sample> {
    parse_exposition(text).samples
}

/// Parses the text format, keeping a note of every line it cannot read.
pub fn parse_exposition(text: &str) -> Exposition {
    let mut out = Exposition::default();
    for (i, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(Some(s)) => out.samples.push(s),
            Ok(None) => {}
            Err(e) => out.unreadable.push((i + 1, e)),
        }
    }
    out
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// A cursor over one line.
struct Cur<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cur<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }
    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }
    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }
    fn blanks(&mut self) -> usize {
        let n = self.rest().len() - self.rest().trim_start_matches(is_blank).len();
        self.pos += n;
        n
    }
    fn eat(&mut self, t: &str) -> bool {
        if self.rest().starts_with(t) {
            self.pos += t.len();
            true
        } else {
            false
        }
    }
    /// `[a-zA-Z_:][a-zA-Z0-9_:]*` (`colon`: metric names) or without `:` (label names).
    fn ident(&mut self, colon: bool) -> Option<&'a str> {
        let ok = |c: char, first: bool| {
            c.is_ascii_alphabetic()
                || c == '_'
                || (colon && c == ':')
                || (!first && c.is_ascii_digit())
        };
        let start = self.pos;
        let mut first = true;
        while let Some(c) = self.peek() {
            if !ok(c, first) {
                break;
            }
            first = false;
            self.bump();
        }
        (self.pos > start).then(|| &self.s[start..self.pos])
    }
    /// A double-quoted string with `\\`, `\"` and `\n` escapes (any other escaped character
    /// stands for itself).
    fn quoted(&mut self) -> Result<String, String> {
        if !self.eat("\"") {
            return Err(format!("expected `\"` at `{}`", clip(self.rest())));
        }
        let mut v = String::new();
        loop {
            match self.bump() {
                None => return Err("unterminated quoted string".into()),
                Some('"') => return Ok(v),
                Some('\\') => match self.bump() {
                    Some('n') => v.push('\n'),
                    Some(c) => v.push(c),
                    None => return Err("unterminated escape".into()),
                },
                Some(c) => v.push(c),
            }
        }
    }
    /// A token up to the next blank.
    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(|c| !is_blank(c)) {
            self.bump();
        }
        &self.s[start..self.pos]
    }
}

fn clip(s: &str) -> String {
    s.chars().take(30).collect()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One line: `Ok(None)` for a blank line or a comment.
fn parse_line(line: &str) -> Result<Option<Sample>, String> {
    let mut c = Cur { s: line, pos: 0 };
    c.blanks();
    if c.rest().is_empty() || c.rest().starts_with('#') {
        return Ok(None);
    }
    let mut name = c.ident(true).map(str::to_string);
    let mut blank = c.blanks() > 0;
    let mut labels = Vec::new();
    if c.eat("{") {
        loop {
            c.blanks();
            if c.eat("}") {
                break;
            }
            // Prometheus 3 allows a quoted metric name as the first item: `{"my.metric"}`.
            let key = if c.peek() == Some('"') {
                let q = c.quoted()?;
                c.blanks();
                if name.is_none() && matches!(c.peek(), Some(',') | Some('}')) {
                    name = Some(q);
                    c.eat(",");
                    continue;
                }
                q
            } else {
                c.ident(false)
                    .ok_or_else(|| format!("expected a label name at `{}`", clip(c.rest())))?
                    .to_string()
            };
            c.blanks();
            if !c.eat("=") {
                return Err(format!("expected `=` after label `{key}`"));
            }
            c.blanks();
            let value = c.quoted()?;
            labels.push((key, value));
            c.blanks();
            if !c.eat(",") && c.peek() != Some('}') {
                return Err(format!("expected `,` or `}}` at `{}`", clip(c.rest())));
            }
        }
        blank = c.blanks() > 0;
    }
    let name = name.ok_or_else(|| format!("expected a metric name at `{}`", clip(line)))?;
    if !blank {
        return Err(format!(
            "expected a blank before the value at `{}`",
            clip(c.rest())
        ));
    }
    let raw = c.token();
    let value = parse_value(raw).ok_or_else(|| format!("`{raw}` is not a sample value"))?;
    c.blanks();
    let mut timestamp = None;
    if !c.rest().is_empty() && !c.rest().starts_with('#') {
        let raw = c.token();
        timestamp =
            Some(parse_timestamp(raw).ok_or_else(|| format!("`{raw}` is not a timestamp"))?);
        c.blanks();
    }
    // What remains may only be an exemplar (`# {trace_id="…"} 1.0 [ts]`), which is not part
    // of the sample's value.
    if !c.rest().is_empty() && !c.rest().starts_with('#') {
        return Err(format!("unexpected `{}` after the sample", clip(c.rest())));
    }
    Ok(Some(Sample {
        name,
        labels,
        value,
        timestamp,
    }))
}

/// A Go-style float: `1.5`, `1e3`, `+Inf`, `-Inf`, `NaN` (case-insensitive).
fn parse_value(s: &str) -> Option<f64> {
    if s.is_empty() {
        return None;
    }
    s.parse().ok()
}

/// Milliseconds (text format) or seconds with a fraction (OpenMetrics) since the epoch.
fn parse_timestamp(s: &str) -> Option<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    let secs: f64 = s.parse().ok()?;
    secs.is_finite().then(|| (secs * 1000.0).round() as i64)
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Eq => (a - b).abs() <= f64::EPSILON * a.abs().max(b.abs()).max(1.0),
            Op::Ne => a != b,
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// How a label matcher compares, as in PromQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `=~` (the whole value must match the regex)
    Re,
    /// `!~`
    NotRe,
}

impl MatchOp {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Eq => "=",
            MatchOp::Ne => "!=",
            MatchOp::Re => "=~",
            MatchOp::NotRe => "!~",
        }
    }
}

/// One label matcher: `label="v"`, `label!="v"`, `label=~"re"`, `label!~"re"`. A label the
/// series does not have reads as the empty string (PromQL's rule).
#[derive(Debug, Clone)]
pub struct Matcher {
    pub label: String,
    pub op: MatchOp,
    pub value: String,
    /// The anchored regex for `=~` and `!~`.
    regex: Option<regex::Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, o: &Matcher) -> bool {
        self.label == o.label && self.op == o.op && self.value == o.value
    }
}

impl Matcher {
    pub fn new(label: &str, op: MatchOp, value: &str) -> Result<Matcher, String> {
        let regex = match op {
            MatchOp::Re | MatchOp::NotRe => Some(
                regex::Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("`{value}` is not a regex: {e}"))?,
            ),
            MatchOp::Eq | MatchOp::Ne => None,
        };
        Ok(Matcher {
            label: label.into(),
            op,
            value: value.into(),
            regex,
        })
    }

    pub fn matches(&self, s: &Sample) -> bool {
        let v = s.label(&self.label);
        match (self.op, &self.regex) {
            (MatchOp::Eq, _) => v == self.value,
            (MatchOp::Ne, _) => v != self.value,
            (MatchOp::Re, Some(r)) => r.is_match(v),
            (MatchOp::NotRe, Some(r)) => !r.is_match(v),
            (_, None) => false,
        }
    }
}

/// A selector: a metric name and label matchers (all must hold).
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub name: String,
    pub matchers: Vec<Matcher>,
}

impl Selector {
    /// Parses `name` or `name{label="v",other!~"re"}` (the whole text).
    pub fn parse(s: &str) -> Result<Selector, String> {
        let mut c = Cur { s, pos: 0 };
        c.blanks();
        let sel = Selector::parse_from(&mut c)?;
        c.blanks();
        if !c.rest().is_empty() {
            return Err(format!(
                "unexpected `{}` after the selector",
                clip(c.rest())
            ));
        }
        Ok(sel)
    }

    fn parse_from(c: &mut Cur<'_>) -> Result<Selector, String> {
        let start = c.pos;
        let name = c.ident(true).unwrap_or("");
        let tail = c.rest();
        let shown: String = tail
            .chars()
            .take_while(|ch| !matches!(ch, '{' | ' ' | '\t' | '=' | '!' | '<' | '>'))
            .collect();
        if name.is_empty() || name.starts_with(|ch: char| ch.is_ascii_digit()) || !shown.is_empty()
        {
            return Err(format!(
                "`{}{shown}` is not a metric name",
                &c.s[start..c.pos]
            ));
        }
        let mut matchers = Vec::new();
        c.blanks();
        if c.eat("{") {
            loop {
                c.blanks();
                if c.eat("}") {
                    break;
                }
                if c.rest().is_empty() {
                    return Err(format!("unclosed `{{` in `{}`", c.s[start..].trim()));
                }
                let label = c
                    .ident(false)
                    .ok_or_else(|| format!("expected a label name at `{}`", clip(c.rest())))?
                    .to_string();
                c.blanks();
                let op = if c.eat("=~") {
                    MatchOp::Re
                } else if c.eat("!~") {
                    MatchOp::NotRe
                } else if c.eat("!=") {
                    MatchOp::Ne
                } else if c.eat("=") {
                    MatchOp::Eq
                } else {
                    return Err(format!(
                        "expected `=`, `!=`, `=~` or `!~` after label `{label}`"
                    ));
                };
                c.blanks();
                let value = c.quoted().map_err(|e| format!("label `{label}`: {e}"))?;
                matchers.push(Matcher::new(&label, op, &value)?);
                c.blanks();
                if !c.eat(",") && c.peek() != Some('}') {
                    return Err(if c.rest().is_empty() {
                        format!("unclosed `{{` in `{}`", c.s[start..].trim())
                    } else {
                        format!("expected `,` or `}}` at `{}`", clip(c.rest()))
                    });
                }
            }
        }
        Ok(Selector {
            name: name.to_string(),
            matchers,
        })
    }

    /// Every sample the selector matches, in exposition order.
    pub fn matching<'a>(&self, samples: &'a [Sample]) -> Vec<&'a Sample> {
        samples
            .iter()
            .filter(|s| s.name == self.name && self.matchers.iter().all(|m| m.matches(s)))
            .collect()
    }

    /// The sum of every matching sample, or `None` when nothing matches.
    pub fn eval(&self, samples: &[Sample]) -> Option<f64> {
        let m = self.matching(samples);
        (!m.is_empty()).then(|| m.iter().map(|s| s.value).sum())
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.matchers.is_empty() {
            let parts: Vec<String> = self
                .matchers
                .iter()
                .map(|m| format!("{}{}\"{}\"", m.label, m.op.as_str(), escape(&m.value)))
                .collect();
            write!(f, "{{{}}}", parts.join(","))?;
        }
        Ok(())
    }
}

/// `selector op number`.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub selector: Selector,
    pub op: Op,
    pub value: f64,
}

impl Expr {
    pub fn parse(s: &str) -> Result<Expr, String> {
        let mut c = Cur { s, pos: 0 };
        c.blanks();
        let trimmed = s.trim();
        // The comparison comes after the selector, so a `<` or `}` inside a label value is
        // never taken for it.
        let selector = Selector::parse_from(&mut c)?;
        c.blanks();
        let ops = [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("<", Op::Lt),
            (">", Op::Gt),
        ];
        let op = ops
            .iter()
            .find(|(t, _)| c.eat(t))
            .map(|(_, op)| *op)
            .ok_or_else(|| format!("`{trimmed}` has no comparison (==, !=, <, <=, >, >=)"))?;
        let rhs = c.rest().trim();
        let value: f64 = rhs
            .parse()
            .map_err(|_| format!("`{rhs}` is not a number"))?;
        Ok(Expr {
            selector,
            op,
            value,
        })
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.selector, self.op.as_str(), self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x y\n# TYPE detector_instances gauge\ndetector_instances 4\nhttp_requests_total{route=\"/healthz\",status=\"200\"} 3\nhttp_requests_total{route=\"/metrics\",status=\"200\"} 2\nweird{a=\"q\\\"uote\"} +Inf\n";

    /// The example of the Prometheus exposition-format documentation
    /// (prometheus.io/docs/instrumenting/exposition_formats, "Text format example").
    const DOC_EXAMPLE: &str = r#"# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000

# Escaping in label values:
msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9

# Minimalistic line:
metric_without_timestamp_and_labels 12.47

# A weird metric from before the epoch:
something_weird{problem="division by zero"} +Inf -3982045

# A histogram, which has a pretty complex representation in the text format:
# HELP http_request_duration_seconds A histogram of the request duration.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.05"} 24054
http_request_duration_seconds_bucket{le="0.1"} 33444
http_request_duration_seconds_bucket{le="0.2"} 100392
http_request_duration_seconds_bucket{le="0.5"} 129389
http_request_duration_seconds_bucket{le="1"} 133988
http_request_duration_seconds_bucket{le="+Inf"} 144320
http_request_duration_seconds_sum 53423
http_request_duration_seconds_count 144320

# Finally a summary, which has a complex representation, too:
# HELP rpc_duration_seconds A summary of the RPC duration in seconds.
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.01"} 3102
rpc_duration_seconds{quantile="0.05"} 3272
rpc_duration_seconds{quantile="0.5"} 4773
rpc_duration_seconds{quantile="0.9"} 9001
rpc_duration_seconds{quantile="0.99"} 76656
rpc_duration_seconds_sum 1.7560473e+07
rpc_duration_seconds_count 2693
"#;

    #[test]
    fn parses_samples() {
        let s = parse(TEXT);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].value, 4.0);
        assert_eq!(s[1].labels[0], ("route".into(), "/healthz".into()));
        assert_eq!(s[3].labels[0].1, "q\"uote");
    }

    #[test]
    fn parses_the_documentation_example() {
        let e = parse_exposition(DOC_EXAMPLE);
        assert!(e.unreadable.is_empty(), "{:?}", e.unreadable);
        assert_eq!(e.samples.len(), 20);
        let s = &e.samples;
        assert_eq!(
            s[0].series(),
            "http_requests_total{method=\"post\",code=\"200\"}"
        );
        assert_eq!((s[0].value, s[0].timestamp), (1027.0, Some(1395066363000)));
        assert_eq!((s[1].value, s[1].timestamp), (3.0, Some(1395066363000)));
        assert_eq!(s[2].label("path"), r"C:\DIR\FILE.TXT");
        assert_eq!(s[2].label("error"), "Cannot find file:\n\"FILE.TXT\"");
        assert_eq!(s[2].value, 1.458255915e9);
        assert_eq!((s[3].value, s[3].timestamp), (12.47, None));
        assert_eq!(s[4].value, f64::INFINITY);
        assert_eq!(s[4].timestamp, Some(-3982045));
        assert_eq!(s[10].label("le"), "+Inf");
        assert_eq!(s[18].value, 1.7560473e7);
        let sel = Selector::parse("http_requests_total{code!=\"200\"}").unwrap();
        assert_eq!(sel.eval(s), Some(3.0));
    }

    #[test]
    fn label_values_may_hold_braces_commas_and_escapes() {
        // #15: `}` inside a value ended the label set early and the sample vanished or
        // matched the wrong selector.
        let text = "http_requests_total{path=\"/items/{id}\",status=\"500\"} 42\n\
                    http_requests_total{path=\"a,b=c}\",status=\"200\"} 7\n\
                    x{v=\"back\\\\slash \\\"q\\\" nl\\n\"} 1\n";
        let e = parse_exposition(text);
        assert!(e.unreadable.is_empty(), "{:?}", e.unreadable);
        assert_eq!(e.samples[0].label("path"), "/items/{id}");
        assert_eq!(e.samples[1].label("path"), "a,b=c}");
        assert_eq!(e.samples[2].label("v"), "back\\slash \"q\" nl\n");
        let x = Expr::parse("http_requests_total{status=\"500\"} == 0").unwrap();
        assert_eq!(x.selector.eval(&e.samples), Some(42.0));
        let y = Expr::parse("http_requests_total{path=\"/items/{id}\"} > 1").unwrap();
        assert_eq!(y.selector.eval(&e.samples), Some(42.0));
        assert_eq!(
            y.to_string(),
            "http_requests_total{path=\"/items/{id}\"} > 1"
        );
    }

    #[test]
    fn tabs_timestamps_exemplars_and_special_values() {
        let text = "a\t1\n\
                    b{x=\"1\"}\t\t2\t1700000000000\n\
                    c{le=\"0.1\"} 8 # {trace_id=\"KOO5S4vxi0o\"} 0.067 1520879607.789\n\
                    d 3 1520879607.789 # {id=\"x\"} 1\n\
                    e NaN\n f -Inf\n g +inf\n \
                    h{ a = \"1\" , b=\"2\", } 4\n\
                    {\"dotted.name\",le=\"1\"} 5\n";
        let e = parse_exposition(text);
        assert!(e.unreadable.is_empty(), "{:?}", e.unreadable);
        let v: Vec<(&str, f64)> = e
            .samples
            .iter()
            .map(|s| (s.name.as_str(), s.value))
            .collect();
        assert_eq!(v[0], ("a", 1.0));
        assert_eq!(v[1], ("b", 2.0));
        assert_eq!(e.samples[1].timestamp, Some(1_700_000_000_000));
        assert_eq!(v[2], ("c", 8.0));
        assert_eq!(e.samples[2].timestamp, None);
        assert_eq!(
            (v[3], e.samples[3].timestamp),
            (("d", 3.0), Some(1520879607789))
        );
        assert!(v[4].1.is_nan());
        assert_eq!(v[5].1, f64::NEG_INFINITY);
        assert_eq!(v[6].1, f64::INFINITY);
        assert_eq!(
            e.samples[7].labels,
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        assert_eq!(
            (v[8], e.samples[8].label("le")),
            (("dotted.name", 5.0), "1")
        );
    }

    #[test]
    fn unreadable_lines_are_reported_not_guessed() {
        let text =
            "ok 1\nbad{a=\"1\" 2\nworse{a=1} 3\nnovalue\nvalue_x abc\nts 1 soon\nx{a=\"1\"}2\n";
        let e = parse_exposition(text);
        assert_eq!(e.samples.len(), 1);
        let lines: Vec<usize> = e.unreadable.iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 7], "{:?}", e.unreadable);
    }

    #[test]
    fn matchers_follow_promql() {
        let s = parse("r{status=\"200\"} 5\nr{status=\"500\"} 42\nr{status=\"503\"} 1\nr 100\n");
        let v = |sel: &str| Selector::parse(sel).unwrap().eval(&s);
        assert_eq!(v("r"), Some(148.0));
        assert_eq!(v("r{status=\"500\"}"), Some(42.0));
        // A missing label reads as "": `!=` matches the unlabelled series too.
        assert_eq!(v("r{status!=\"200\"}"), Some(143.0));
        assert_eq!(v("r{status=~\"5..\"}"), Some(43.0));
        assert_eq!(v("r{status!~\"5..\"}"), Some(105.0));
        assert_eq!(v("r{status=~\"5\"}"), None, "regexes are anchored");
        assert_eq!(v("r{status=\"\"}"), Some(100.0));
        assert_eq!(v("r{status=\"404\"}"), None);
        let sel = Selector::parse("r{status!~\"5..\", a=\"q\\\"\"}").unwrap();
        assert_eq!(sel.to_string(), "r{status!~\"5..\",a=\"q\\\"\"}");
        assert!(Selector::parse("r{status=~\"(\"}").is_err());
    }

    #[test]
    fn evaluates_expressions() {
        let s = parse(TEXT);
        let e = Expr::parse("detector_instances == 4").unwrap();
        assert!(e.op.holds(e.selector.eval(&s).unwrap(), e.value));
        let e = Expr::parse("http_requests_total{status=\"200\"} >= 5").unwrap();
        assert_eq!(e.selector.eval(&s), Some(5.0));
        let e = Expr::parse("http_requests_total{route=\"/healthz\"} < 3").unwrap();
        assert!(!e.op.holds(e.selector.eval(&s).unwrap(), e.value));
        assert_eq!(Expr::parse("missing > 1").unwrap().selector.eval(&s), None);
        assert_eq!(e.to_string(), "http_requests_total{route=\"/healthz\"} < 3");
        let e = Expr::parse("  x{a=\"<=\"}<=2").unwrap();
        assert_eq!((e.op, e.value), (Op::Le, 2.0));
    }

    #[test]
    fn rejects_bad_expressions() {
        assert!(Expr::parse("detector_instances").is_err());
        assert!(Expr::parse("detector_instances == four").is_err());
        assert!(Expr::parse("9x == 1").is_err());
        assert!(Expr::parse("a{b=\"c\" == 1").is_err());
        assert!(Expr::parse("a-b == 1").is_err());
        assert!(Expr::parse("a{b~\"c\"} == 1").is_err());
    }
}
