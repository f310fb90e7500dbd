//! The live view of `bips top`: ratatui over crossterm, in the alternate
//! screen and raw mode. The terminal is restored on every way out: q, Esc or
//! Ctrl-C; SIGTERM, SIGHUP (an SSH session that drops) or SIGINT from
//! `kill`; an error; a panic (the panic hook restores it before the message
//! is printed).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
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
        if !event::poll(wait).map_err(io)? {
            continue;
        }
        match event::read().map_err(io)? {
            Event::Key(k) if k.kind == KeyEventKind::Press => {
                let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
                match k.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(None),
                    KeyCode::Char('c') if ctrl => return Ok(None),
                    KeyCode::Char('s') => view.sort = view.sort.next(),
                    KeyCode::Char('n') => view.sort = SortKey::Name,
                    KeyCode::Char('r') => view.sort = SortKey::Rate,
                    KeyCode::Char('l') => view.sort = SortKey::Lag,
                    KeyCode::Down | KeyCode::Char('j') => view.scroll += 1,
                    KeyCode::Up | KeyCode::Char('k') => view.scroll = view.scroll.saturating_sub(1),
                    KeyCode::PageDown => view.scroll += 10,
                    KeyCode::PageUp => view.scroll = view.scroll.saturating_sub(10),
                    KeyCode::Home => view.scroll = 0,
                    _ => continue,
                }
                dirty = true;
            }
            Event::Resize(..) => dirty = true,
            _ => {}
        }
    }
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
