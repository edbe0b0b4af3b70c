//! The Aeron side: an embedded C media driver in threading mode SHARED
//! (conductor, sender and receiver as one agent), driven by this thread
//! (`aeron_driver_main_do_work`), a client whose conductor this thread also
//! invokes (`use_conductor_agent_invoker`), one multi-destination-cast
//! publication with dynamic control and `fc=min`, and N subscriptions, each
//! on its own loopback endpoint. Everything runs in this one thread: offer,
//! driver duty cycle, client duty cycle, then each subscription's poll,
//! back to back. Nothing of Aeron runs on another thread.

use std::ffi::CString;
use std::time::{Duration, Instant};

use rusteron_client::{Aeron, AeronContext, AeronPublication, AeronSubscription, Handlers};
use rusteron_media_driver::bindings::aeron_threading_mode_enum;
use rusteron_media_driver::{AeronDriver, AeronDriverContext};

use crate::common::{
    cpu_seconds, free_ports, now_ns, run_queue_seconds, sleep_until_due, stamp, Outcome, Pacer,
    Sink, Trial,
};

/// Socket buffers, both directions: the same as Jasper-rs's default (and
/// this kernel's cap, `net.core.rmem_max`).
pub const SOCKET_BUFFER: usize = 4 << 20;
/// Term length of the publication (and its images): 3 terms each in
/// /dev/shm, allocated up front (not sparse) and pre-touched by the client, as
/// Aeron advises for latency; 1 MiB keeps 17 logs small, and the publisher
/// window (half a term) stays above the receiver window (128 KiB).
pub const TERM_LENGTH: usize = 1 << 20;
/// Default MTU of the C driver (1408 bytes): a frame is a 32-byte header
/// plus the message, aligned to 32.
pub const MTU: usize = 1408;
/// Fragments one subscription poll may hand over (Aeron's samples use 10;
/// throughput samples more).
const FRAGMENT_LIMIT: usize = 64;

/// The Aeron C library's version, e.g. "1.54.0".
pub fn version() -> String {
    match (
        Aeron::version_major(),
        Aeron::version_minor(),
        Aeron::version_patch(),
    ) {
        (Ok(a), Ok(b), Ok(c)) => format!("{a}.{b}.{c}"),
        _ => Aeron::version_full().to_string(),
    }
}

/// Messages that fill one Aeron datagram (the throughput burst).
pub fn per_datagram(size: usize) -> u64 {
    let frame = (32 + size).div_ceil(32) * 32;
    ((MTU - 32) / frame).max(1) as u64
}

fn err(what: &str) -> impl Fn(rusteron_client::AeronCError) -> String + '_ {
    move |e| format!("aeron: {what}: {e}")
}

fn derr(what: &str) -> impl Fn(rusteron_media_driver::AeronCError) -> String + '_ {
    move |e| format!("aeron driver: {what}: {e}")
}

fn cstr(s: String) -> Result<CString, String> {
    CString::new(s).map_err(|e| format!("channel: {e}"))
}

/// The driver and client, both stepped by the caller.
struct Stack {
    // Field order is drop order: subscriptions and publication, then the
    // client, then the driver.
    subs: Vec<AeronSubscription>,
    publication: Option<AeronPublication>,
    aeron: Aeron,
    driver: AeronDriver,
    _driver_ctx: AeronDriverContext,
    _client_ctx: AeronContext,
}

impl Stack {
    fn duty_cycle(&self) -> Result<i32, String> {
        let d = self.driver.main_do_work().map_err(derr("duty cycle"))?;
        let c = self
            .aeron
            .main_do_work()
            .map_err(err("client duty cycle"))?;
        Ok(d + c)
    }

    fn open(n: usize) -> Result<Stack, String> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = cstr(format!(
            "/dev/shm/jasper-aeron-peer-{}-{k}",
            std::process::id()
        ))?;
        let dctx = AeronDriverContext::new().map_err(derr("context"))?;
        dctx.set_dir(&dir).map_err(derr("dir"))?;
        dctx.set_dir_delete_on_start(true).map_err(derr("dir"))?;
        dctx.set_dir_delete_on_shutdown(true).map_err(derr("dir"))?;
        dctx.set_threading_mode(aeron_threading_mode_enum::AERON_THREADING_MODE_SHARED)
            .map_err(derr("threading mode"))?;
        dctx.set_term_buffer_length(TERM_LENGTH)
            .map_err(derr("term length"))?;
        dctx.set_mtu_length(MTU).map_err(derr("mtu"))?;
        dctx.set_term_buffer_sparse_file(false)
            .map_err(derr("sparse"))?;
        dctx.set_socket_so_rcvbuf(SOCKET_BUFFER)
            .map_err(derr("rcvbuf"))?;
        dctx.set_socket_so_sndbuf(SOCKET_BUFFER)
            .map_err(derr("sndbuf"))?;
        let driver = AeronDriver::new(&dctx).map_err(derr("init"))?;
        // Manual main loop: this thread runs the shared agent.
        driver.start(true).map_err(derr("start"))?;
        for _ in 0..8 {
            driver.main_do_work().map_err(derr("duty cycle"))?;
        }
        let cctx = AeronContext::new().map_err(err("context"))?;
        cctx.set_dir(&dir).map_err(err("dir"))?;
        cctx.set_use_conductor_agent_invoker(true)
            .map_err(err("invoker"))?;
        cctx.set_pre_touch_mapped_memory(true)
            .map_err(err("pre-touch"))?;
        cctx.set_error_handler(Some(|code: i32, msg: &str| {
            eprintln!("aeron client error {code}: {msg}")
        }))
        .map_err(err("error handler"))?;
        let aeron = Aeron::new(&cctx).map_err(err("connect"))?;
        aeron.start().map_err(err("start"))?;
        let mut stack = Stack {
            subs: Vec::new(),
            publication: None,
            aeron,
            driver,
            _driver_ctx: dctx,
            _client_ctx: cctx,
        };
        stack.wire(n)?;
        Ok(stack)
    }

    /// One MDC publication (dynamic control, fc=min) and n subscriptions,
    /// until every subscription has its image and the publication is
    /// connected.
    fn wire(&mut self, n: usize) -> Result<(), String> {
        const STREAM: i32 = 1001;
        let ports = free_ports(n + 1);
        if ports.len() != n + 1 {
            return Err("no free loopback ports".into());
        }
        let control = format!("127.0.0.1:{}", ports[0]);
        let pub_uri = cstr(format!(
            "aeron:udp?control={control}|control-mode=dynamic|fc=min"
        ))?;
        let adding = self
            .aeron
            .async_add_publication(&pub_uri, STREAM)
            .map_err(err("add publication"))?;
        let give_up = Instant::now() + Duration::from_secs(10);
        let publication = loop {
            self.duty_cycle()?;
            if let Some(p) = adding.poll().map_err(err("add publication"))? {
                break p;
            }
            if Instant::now() > give_up {
                return Err("aeron: publication not added in 10 s".into());
            }
        };
        for port in &ports[1..] {
            let uri = cstr(format!(
                "aeron:udp?endpoint=127.0.0.1:{port}|control={control}|control-mode=dynamic"
            ))?;
            let adding = self
                .aeron
                .async_add_subscription(&uri, STREAM, Handlers::NONE, Handlers::NONE)
                .map_err(err("add subscription"))?;
            let sub = loop {
                self.duty_cycle()?;
                if let Some(s) = adding.poll().map_err(err("add subscription"))? {
                    break s;
                }
                if Instant::now() > give_up {
                    return Err("aeron: subscription not added in 10 s".into());
                }
            };
            self.subs.push(sub);
        }
        loop {
            self.duty_cycle()?;
            let mut ready = publication.is_connected();
            for s in &self.subs {
                ready &= s.image_count().map_err(err("image count"))? > 0;
            }
            if ready {
                break;
            }
            if Instant::now() > give_up {
                return Err(format!(
                    "aeron: {n} subscriptions not all connected in 10 s"
                ));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        self.publication = Some(publication);
        Ok(())
    }
}

/// Run one trial on Aeron.
pub fn run(t: &Trial) -> Result<Outcome, String> {
    jasper_io::runtime::precise_sleep();
    let stack = Stack::open(t.n)?;
    let publication = stack.publication.clone().ok_or("aeron: no publication")?;
    let mut sink = Sink::new(t);
    let mut msg = vec![0x41u8; t.size];
    let total = t.total();
    let mut published = 0u64;
    let mut back_pressured = 0u64;
    let pacer = Pacer::start(t);
    let (cpu0, rq0, wall0) = (cpu_seconds(), run_queue_seconds(), Instant::now());
    let deadline = pacer.end() + t.slack;
    let deadline_ns = now_ns() + (deadline - Instant::now()).as_nanos() as u64;
    loop {
        let mut work = stack.duty_cycle()?;
        let ready = pacer.ready(published);
        for _ in 0..ready {
            stamp(&mut msg, published, now_ns());
            match publication.offer(&msg) {
                Ok(_) => {
                    published += 1;
                    work += 1;
                }
                Err(e) if e.is_retryable() => {
                    back_pressured += 1;
                    break;
                }
                Err(e) => return Err(format!("aeron: offer: {e:?}")),
            }
        }
        for (r, sub) in stack.subs.iter().enumerate() {
            work += sub
                .poll_fn(
                    |buf, _header| {
                        let at = sink.now();
                        sink.deliver(r, buf, at, false);
                    },
                    FRAGMENT_LIMIT,
                )
                .map_err(err("poll"))?;
        }
        sink.end_pass();
        if sink.complete() || Instant::now() > deadline {
            break;
        }
        if work > 0 {
            stack.driver.main_idle_strategy(work);
        } else if published < total && pacer.wait(published) < Duration::from_millis(1) {
            sleep_until_due(&pacer, published);
        } else {
            // The driver's own idle strategy (backoff: spin, yield, park
            // 1 µs .. 1 ms).
            stack.driver.main_idle_strategy(0);
        }
    }
    let cpu = cpu_seconds() - cpu0;
    let run_queue = run_queue_seconds() - rq0;
    let wall = wall0.elapsed().as_secs_f64();
    let mut out = Outcome::from_sink(&sink, published, total, deadline_ns);
    out.cpu_s = cpu;
    out.run_queue_s = run_queue;
    out.wall_s = wall;
    out.note = format!("offers back-pressured {back_pressured}");
    drop(publication);
    drop(stack);
    Ok(out)
}
