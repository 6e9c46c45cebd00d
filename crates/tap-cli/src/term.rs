//! Writing to the terminal without dying of it. `println!`/`eprintln!` panic when the stream
//! is closed (`tap run ... | head -1`, `2>&-`), and a panicking `tap run` would orphan its
//! command; `tap run` writes through these instead and goes on supervising and recording.

use std::io::Write;

use crate::store::Stream;

/// A line of tap's own on stderr, never failing (`say!("tap: ...")`).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::term::say(format_args!($($arg)*))
    };
}

pub fn say(args: std::fmt::Arguments<'_>) {
    // Unit tests: through the test harness's capture (a direct write would bypass it).
    #[cfg(test)]
    eprintln!("{args}");
    #[cfg(not(test))]
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}

/// Echoes the command's output lines to tap's stdout and stderr. A stream that closes is no
/// longer written (said once on the other); the lines are still recorded.
#[derive(Debug)]
pub struct Echo {
    open: [bool; 2],
}

impl Default for Echo {
    fn default() -> Self {
        Echo { open: [true; 2] }
    }
}

impl Echo {
    pub fn line(&mut self, stream: Stream, text: &str) {
        let i = usize::from(stream == Stream::Stderr);
        if !self.open[i] {
            return;
        }
        let written = match stream {
            Stream::Stdout => writeln!(std::io::stdout().lock(), "{text}"),
            Stream::Stderr => writeln!(std::io::stderr().lock(), "{text}"),
        };
        if let Err(e) = written {
            self.open[i] = false;
            if stream == Stream::Stdout {
                say!("tap: stdout is closed ({e}); the command's output is still recorded (tap logs)");
            }
        }
    }
}
