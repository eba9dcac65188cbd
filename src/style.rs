//! Terminal colour for the text renderers (the human report, rendered diagnostics): one helper
//! built on `anstyle`, instead of escape codes written by hand in each renderer. A leaf: it
//! imports nothing of the crate and never decides *whether* to colour — the caller passes
//! that (the CLI asks only when the output is a terminal).

use std::fmt;

pub use anstyle::{AnsiColor, Style};

/// Bold text.
pub const BOLD: Style = Style::new().bold();
/// Dimmed text (headers, descriptions).
pub const DIM: Style = Style::new().dimmed();

/// Text in a foreground colour (add `.bold()` for the bright, loud variant).
pub const fn fg(color: AnsiColor) -> Style {
    Style::new().fg_color(Some(anstyle::Color::Ansi(color)))
}

/// `text` in `style` when `color` is true; otherwise `text` exactly as it is, with no escape
/// code at all, so uncoloured output is byte for byte the plain text.
pub fn paint<T: fmt::Display>(color: bool, style: Style, text: T) -> Painted<T> {
    Painted {
        style: if color { style } else { Style::new() },
        text,
    }
}

/// What [`paint`] returns: formats as the styled text.
#[derive(Debug, Clone, Copy)]
pub struct Painted<T> {
    style: Style,
    text: T,
}

impl<T: fmt::Display> fmt::Display for Painted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.style.is_plain() {
            return self.text.fmt(f);
        }
        write!(
            f,
            "{}{}{}",
            self.style,
            self.text,
            self.style.render_reset()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_colour_is_the_plain_text() {
        let red = fg(AnsiColor::Red).bold();
        assert_eq!(paint(false, red, "NO-GO").to_string(), "NO-GO");
        assert_eq!(paint(true, Style::new(), "x").to_string(), "x");
    }

    #[test]
    fn colour_wraps_in_the_style_and_resets() {
        let s = paint(true, fg(AnsiColor::Red).bold(), "NO-GO").to_string();
        assert_eq!(s, "\x1b[1m\x1b[31mNO-GO\x1b[0m");
        assert_eq!(paint(true, DIM, 7).to_string(), "\x1b[2m7\x1b[0m");
    }
}
