//! The live view of `bips top`: ratatui over crossterm, in the alternate
//! screen and raw mode. The terminal is restored on every way out: q, Esc or
//! Ctrl-C; SIGTERM, SIGHUP (an SSH session that drops) or SIGINT from
//! `kill`; an error; a panic (the panic hook restores it before the message
//! is printed).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::crossterm::{cursor, execute};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Terminal;

use super::collect::{self, ChannelStats, LatencyProbes, Snapshot};
use super::render::{self, SortKey};
use super::TopArgs;
use crate::{signals, Failure};

/// Whether the terminal is in our mode and must be given back.
static ENTERED: AtomicBool = AtomicBool::new(false);

/// Gives the terminal back (idempotent; safe from the panic hook).
fn restore() {
    if ENTERED.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let mut out = std::io::stdout();
        let _ = execute!(out, LeaveAlternateScreen, cursor::Show);
        let _ = out.flush();
    }
}

/// Raw mode + alternate screen while alive; restored on drop and on panic.
struct Guard;

impl Guard {
    fn enter() -> std::io::Result<Guard> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        ENTERED.store(true, Ordering::SeqCst);
        enable_raw_mode()?;
        execute!(std::io::stdout(), EnterAlternateScreen, cursor::Hide)?;
        Ok(Guard)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
    }
}

fn io(e: std::io::Error) -> Failure {
    Failure::new(1, format!("terminal: {e}"))
}

/// Runs the live view until a quit key or a signal.
pub fn run(a: &TopArgs) -> Result<(), Failure> {
    if !std::io::stdout().is_terminal() {
        return Err(Failure::new(
            2,
            "bips top needs a terminal on stdout: use `bips top --once` (plain text) \
             or `bips top --json` in scripts",
        ));
    }
    signals::install().map_err(|e| Failure::new(1, format!("cannot catch signals: {e}")))?;
    let sig = {
        let _guard = Guard::enter().map_err(io)?;
        live(a)?
    };
    // The terminal is restored here (the guard is gone).
    if let Some(sig) = sig {
        signals::die_of(sig);
    }
    Ok(())
}

struct View {
    sort: SortKey,
    scroll: usize,
    stats: Vec<ChannelStats>,
}

/// The loop; `Some(signal)` when a signal ended it.
fn live(a: &TopArgs) -> Result<Option<i32>, Failure> {
    let mut term = Terminal::new(CrosstermBackend::new(std::io::stdout())).map_err(io)?;
    let interval = Duration::from_secs_f64(a.interval);
    let mut probes = a.latency.then(LatencyProbes::default);
    let mut prev: Option<Snapshot> = None;
    let mut view = View {
        sort: a.sort,
        scroll: 0,
        stats: Vec::new(),
    };
    let mut next = Instant::now();
    let mut dirty = true;
    loop {
        if let Some(sig) = signals::pending() {
            return Ok(Some(sig));
        }
        if Instant::now() >= next {
            let snap = collect::snapshot(&a.patterns)?;
            if let Some(p) = probes.as_mut() {
                p.update(&snap);
            }
            view.stats = collect::derive(prev.as_ref(), &snap, probes.as_mut());
            prev = Some(snap);
            next = Instant::now() + interval;
            dirty = true;
        }
        if dirty {
            render::sort(&mut view.stats, view.sort);
            term.draw(|f| draw(f, &mut view, a.interval)).map_err(io)?;
            dirty = false;
            // Test hook (cli/tests/top.rs): a panic while the terminal is
            // in raw mode must still give it back.
            if std::env::var_os("BIPS_TOP_TEST_PANIC").is_some() {
                panic!("BIPS_TOP_TEST_PANIC is set: panicking on purpose");
            }
        }
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        let keys = match read_keys(wait) {
            Input::Keys(k) => k,
            // The terminal hung up (SSH dropped): nobody to draw for.
            Input::Gone => return Ok(Some(libc::SIGHUP)),
        };
        for key in keys {
            match key {
                Key::Quit => return Ok(None),
                Key::Sort => view.sort = view.sort.next(),
                Key::SortBy(k) => view.sort = k,
                Key::Scroll(d) => view.scroll = view.scroll.saturating_add_signed(d),
                Key::Home => view.scroll = 0,
            }
            dirty = true;
        }
        // A resize shows at the next refresh (ratatui resizes on draw).
    }
}

/// What the user typed.
#[derive(Debug, PartialEq, Eq)]
enum Key {
    Quit,
    Sort,
    SortBy(SortKey),
    Scroll(isize),
    Home,
}

enum Input {
    Keys(Vec<Key>),
    Gone,
}

/// Waits up to `wait` for input on the terminal (stdin) and decodes it.
///
/// Read here with poll(2) and read(2), not through crossterm's event
/// reader: on a terminal that hung up (a dropped SSH session) crossterm
/// 0.28 retries a read that fails with EIO forever, at 100% CPU, and never
/// returns; here POLLHUP, EOF or an error ends the view.
fn read_keys(wait: Duration) -> Input {
    let mut fds = [libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    }];
    let ms = wait.as_millis().min(1000) as libc::c_int;
    // SAFETY: `fds` is a valid array of one pollfd for the call's duration.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::Interrupted {
            Input::Keys(Vec::new())
        } else {
            Input::Gone
        };
    }
    if n == 0 {
        return Input::Keys(Vec::new());
    }
    if fds[0].revents & libc::POLLIN == 0 {
        // POLLHUP, POLLERR or POLLNVAL without data.
        return Input::Gone;
    }
    let mut buf = [0u8; 256];
    // SAFETY: reads at most `buf.len()` bytes into `buf`, which we own.
    let got = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
    match got {
        n if n > 0 => Input::Keys(decode(&buf[..n as usize])),
        0 => Input::Gone,
        _ => match std::io::Error::last_os_error().kind() {
            std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock => {
                Input::Keys(Vec::new())
            }
            _ => Input::Gone,
        },
    }
}

/// Decodes the bytes of a raw-mode terminal: letters, Ctrl-C, Esc, arrows,
/// PgUp/PgDn, Home. Anything else is ignored.
fn decode(mut b: &[u8]) -> Vec<Key> {
    let mut keys = Vec::new();
    while let Some((&c, rest)) = b.split_first() {
        b = rest;
        let key = match c {
            b'q' | 0x03 => Some(Key::Quit),
            b's' => Some(Key::Sort),
            b'n' => Some(Key::SortBy(SortKey::Name)),
            b'r' => Some(Key::SortBy(SortKey::Rate)),
            b'l' => Some(Key::SortBy(SortKey::Lag)),
            b'j' => Some(Key::Scroll(1)),
            b'k' => Some(Key::Scroll(-1)),
            0x1b => {
                // A CSI/SS3 sequence (ESC [ ... or ESC O ...), else Esc alone.
                if let Some((&(b'[' | b'O'), rest)) = b.split_first() {
                    let end = rest
                        .iter()
                        .position(|x| (0x40..=0x7e).contains(x))
                        .unwrap_or(rest.len().saturating_sub(1));
                    let seq = &rest[..(end + 1).min(rest.len())];
                    b = &rest[seq.len()..];
                    match seq {
                        b"A" => Some(Key::Scroll(-1)),
                        b"B" => Some(Key::Scroll(1)),
                        b"5~" => Some(Key::Scroll(-10)),
                        b"6~" => Some(Key::Scroll(10)),
                        b"H" | b"1~" => Some(Key::Home),
                        _ => None,
                    }
                } else {
                    Some(Key::Quit)
                }
            }
            _ => None,
        };
        keys.extend(key);
    }
    keys
}

fn draw(f: &mut ratatui::Frame<'_>, view: &mut View, interval: f64) {
    let area = f.area();
    let width = area.width as usize;
    let height = area.height as usize;
    let title = render::title(view.stats.len(), interval, view.sort, true);
    let mut table = render::table(&view.stats, width).into_iter();
    let header = table.next().unwrap_or_default();
    let body: Vec<String> = table.collect();
    let room = height.saturating_sub(2);
    view.scroll = view.scroll.min(body.len().saturating_sub(room));
    let mut lines = vec![
        Line::styled(
            format!("{title:<width$}"),
            Style::new().add_modifier(Modifier::REVERSED),
        ),
        Line::styled(header, Style::new().add_modifier(Modifier::BOLD)),
    ];
    lines.extend(body.into_iter().skip(view.scroll).take(room).map(Line::raw));
    f.render_widget(Paragraph::new(lines), area);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_keys_and_escape_sequences() {
        assert_eq!(decode(b"q"), [Key::Quit]);
        assert_eq!(decode(b"\x03"), [Key::Quit]);
        assert_eq!(decode(b"\x1b"), [Key::Quit]);
        assert_eq!(
            decode(b"\x1b[A\x1b[B\x1b[5~\x1b[6~\x1b[Hs"),
            [
                Key::Scroll(-1),
                Key::Scroll(1),
                Key::Scroll(-10),
                Key::Scroll(10),
                Key::Home,
                Key::Sort
            ]
        );
        assert_eq!(decode(b"\x1bOA"), [Key::Scroll(-1)]);
        assert_eq!(decode(b"x\x1b[99;5Xr"), [Key::SortBy(SortKey::Rate)]);
        assert_eq!(decode(b"\x1b["), []);
    }
}
