//! Prometheus text exposition format: parsing samples and evaluating the small comparison
//! language of `metric` checks (`name{label="v"} >= 3`).

use std::fmt;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses the text format, skipping comments and lines it cannot read.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(i) if line[..i].find(' ').is_none() => {
            let close = line[i..].find('}')? + i;
            (
                &line[..i],
                parse_labels(&line[i + 1..close])?,
                &line[close + 1..],
            )
        }
        _ => {
            let sp = line.find(' ')?;
            (&line[..sp], Vec::new(), &line[sp..])
        }
    };
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

fn parse_labels(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_string();
        let after = rest[eq + 1..].trim_start();
        let after = after.strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return None,
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end?;
        out.push((key, value));
        rest = after[end + 1..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    Some(out)
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

/// A selector: a metric name and label matchers (all must be equal).
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

impl Selector {
    /// The sum of every matching sample, or `None` when nothing matches.
    pub fn eval(&self, samples: &[Sample]) -> Option<f64> {
        let mut found = false;
        let mut sum = 0.0;
        for s in samples.iter().filter(|s| s.name == self.name) {
            if self
                .labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(k2, v2)| k == k2 && v == v2))
            {
                found = true;
                sum += s.value;
            }
        }
        found.then_some(sum)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.labels.is_empty() {
            let parts: Vec<String> = self
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
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
        let s = s.trim();
        let ops = [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("<", Op::Lt),
            (">", Op::Gt),
        ];
        // The operator is the first one outside the label braces.
        let brace_end = s.find('}').map_or(0, |i| i + 1);
        let (pos, len, op) = ops
            .iter()
            .filter_map(|(t, op)| {
                s[brace_end..]
                    .find(t)
                    .map(|i| (i + brace_end, t.len(), *op))
            })
            .min_by_key(|(i, len, _)| (*i, usize::MAX - len))
            .ok_or_else(|| format!("`{s}` has no comparison (==, !=, <, <=, >, >=)"))?;
        let lhs = s[..pos].trim();
        let rhs = s[pos + len..].trim();
        let value: f64 = rhs
            .parse()
            .map_err(|_| format!("`{rhs}` is not a number"))?;
        let (name, labels) = match lhs.find('{') {
            Some(i) => {
                let inner = lhs[i + 1..]
                    .strip_suffix('}')
                    .ok_or_else(|| format!("unclosed `{{` in `{lhs}`"))?;
                let labels =
                    parse_labels(inner).ok_or_else(|| format!("bad label matchers in `{lhs}`"))?;
                (&lhs[..i], labels)
            }
            None => (lhs, Vec::new()),
        };
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid_name {
            return Err(format!("`{name}` is not a metric name"));
        }
        Ok(Expr {
            selector: Selector {
                name: name.to_string(),
                labels,
            },
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

    #[test]
    fn parses_samples() {
        let s = parse(TEXT);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].value, 4.0);
        assert_eq!(s[1].labels[0], ("route".into(), "/healthz".into()));
        assert_eq!(s[3].labels[0].1, "q\"uote");
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
    }

    #[test]
    fn rejects_bad_expressions() {
        assert!(Expr::parse("detector_instances").is_err());
        assert!(Expr::parse("detector_instances == four").is_err());
        assert!(Expr::parse("9x == 1").is_err());
        assert!(Expr::parse("a{b=\"c\" == 1").is_err());
    }
}
