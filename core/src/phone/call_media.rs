//! The media of one call: a thread that every 20 ms takes a frame from the
//! audio device, resamples and sends it as RTP, and plays the next frame
//! from the stream; it answers RTCP and reports call statistics.
//!
//! Each call's media runs on a thread of its own, with its own
//! single-threaded tokio runtime, not as a task of the phone's runtime: the
//! device's playout queue holds only 10 ms, and anything else the phone
//! does (a TLS handshake, a large NOTIFY, a DNS answer, another call) can
//! hold that runtime's workers longer than that: in `calls
//! each_hears_what_the_other_says`, 2 runs of 14 saw both calls' media
//! wait 13-17 ms at once, so the device ran dry and the listener heard a
//! gap. On their own threads, in 20 runs no tick came over 9.7 ms after
//! the one before it (every 5 ms is the plan).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::audio::echo::DeviceEchoCanceller;
use crate::audio::resample::FrameResampler;
use crate::audio::sound_card::SoundCard;
use crate::audio::wav::WavDevice;
use crate::audio::{AudioDevice, AudioIo};
use crate::media::rtcp_report::RtcpSession;
use crate::media::sdp::{Direction, Negotiated};
use crate::media::stream::{MediaEvent, MediaStream};

use super::datagram::DatagramSocket;
use super::event::{CallId, Event};
use super::PhoneError;

/// How often the media loop looks at the device's queues.
const FRAME_POLL: Duration = Duration::from_millis(5);
/// Audio queued for the device below which the next frame is decoded:
/// enough to ride out a late poll, little enough not to add delay.
const PLAYOUT_LOW_WATER_MS: usize = 10;
/// Time without a captured frame after which silence is sent instead.
const DEVICE_STALL: Duration = Duration::from_millis(40);

/// Where a call's audio comes from and goes to. The default is silence
/// both ways.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallAudio {
    /// WAV file to send (silence when `None`).
    pub input: Option<PathBuf>,
    /// WAV file to record what we hear (discarded when `None`).
    pub output: Option<PathBuf>,
    /// Use the default sound card (microphone and loudspeaker, with echo
    /// cancellation) instead of the files.
    pub sound_card: bool,
}

impl CallAudio {
    /// WAV files: `input` is sent, what is heard is recorded to `output`.
    pub fn files(input: Option<PathBuf>, output: Option<PathBuf>) -> CallAudio {
        CallAudio {
            input,
            output,
            sound_card: false,
        }
    }

    /// The default microphone and loudspeaker.
    pub fn sound_card() -> CallAudio {
        CallAudio {
            sound_card: true,
            ..CallAudio::default()
        }
    }
}

/// An RTP socket and the RTCP socket on the port above it, bound but not
/// yet registered with a runtime: the media thread does that with its own.
#[derive(Debug)]
pub(crate) struct RtpSockets {
    rtp: std::net::UdpSocket,
    rtcp: std::net::UdpSocket,
}

impl RtpSockets {
    /// Binds an even/odd port pair on `ip` (RFC 3550 §11).
    pub(crate) fn bind(ip: IpAddr) -> Result<RtpSockets, PhoneError> {
        let any = SocketAddr::new(ip, 0);
        let mut last = None;
        for _ in 0..32 {
            let rtp = std::net::UdpSocket::bind(any)
                .map_err(|source| PhoneError::Bind { addr: any, source })?;
            let port = rtp
                .local_addr()
                .map_err(|source| PhoneError::Bind { addr: any, source })?
                .port();
            if port % 2 == 1 || port == u16::MAX {
                continue;
            }
            let addr = SocketAddr::new(ip, port + 1);
            match std::net::UdpSocket::bind(addr) {
                Ok(rtcp) => return Ok(RtpSockets { rtp, rtcp }),
                Err(source) => last = Some(PhoneError::Bind { addr, source }),
            }
        }
        Err(last.unwrap_or(PhoneError::Bind {
            addr: any,
            source: std::io::Error::other("no even/odd port pair free"),
        }))
    }

    /// Where RTP is received.
    pub(crate) fn rtp_addr(&self) -> Result<SocketAddr, PhoneError> {
        self.rtp.local_addr().map_err(|source| PhoneError::Bind {
            addr: SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0),
            source,
        })
    }
}

/// Commands to a running call media thread.
#[derive(Debug)]
pub(crate) enum MediaCommand {
    Dtmf(String),
    Direction(Direction),
    Mute(bool),
}

/// The driver's handle on a call's media.
#[derive(Debug)]
pub(crate) struct MediaHandle {
    pub commands: mpsc::UnboundedSender<MediaCommand>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MediaHandle {
    /// Stops the media; its last statistics are reported. The thread is
    /// returned to be joined before the phone stops: until it ends, a WAV
    /// being recorded is not complete.
    pub(crate) fn stop(self) -> Option<std::thread::JoinHandle<()>> {
        // Dropping the sender ends the thread's loop.
        drop(self.commands);
        self.thread
    }
}

/// Starts the media of `call` on a thread of its own.
pub(crate) fn spawn(
    call: CallId,
    negotiated: Negotiated,
    sockets: RtpSockets,
    audio: CallAudio,
    events: mpsc::UnboundedSender<Event>,
) -> MediaHandle {
    let (commands, rx) = mpsc::unbounded_channel();
    let thread_events = events.clone();
    let started = std::thread::Builder::new()
        .name(format!("locus-media-{call}"))
        .spawn(move || {
            crate::audio::priority::raise_current_thread();
            let events = thread_events;
            let outcome = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("no media runtime: {e}"))
                .and_then(|runtime| {
                    runtime.block_on(run(call, negotiated, sockets, audio, rx, &events))
                });
            if let Err(message) = outcome {
                let _ = events.send(Event::Error {
                    message: format!("call {call} media: {message}"),
                });
            }
        });
    let thread = started
        .map_err(|e| {
            let _ = events.send(Event::Error {
                message: format!("call {call} media: no thread: {e}"),
            });
        })
        .ok();
    MediaHandle { commands, thread }
}

/// Opens the call's audio device. A sound card that cannot be opened (none
/// present, or busy) does not fail the call: it goes on in silence, and
/// the user is told why.
fn open_device(
    call: CallId,
    audio: &CallAudio,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<(Box<dyn AudioDevice>, AudioIo), String> {
    if audio.sound_card {
        let mut card = SoundCard::default();
        match card.start() {
            Ok(io) => return Ok((Box::new(card), io)),
            Err(e) => {
                let _ = events.send(Event::Error {
                    message: format!(
                        "call {call}: no sound card ({e}); the call goes on without audio"
                    ),
                });
            }
        }
    }
    let mut device = WavDevice::open(audio.input.as_deref(), audio.output.as_deref())
        .map_err(|e| e.to_string())?;
    let io = device.start().map_err(|e| e.to_string())?;
    Ok((Box::new(device), io))
}

async fn run(
    call: CallId,
    negotiated: Negotiated,
    sockets: RtpSockets,
    audio: CallAudio,
    mut commands: mpsc::UnboundedReceiver<MediaCommand>,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<(), String> {
    let register = |socket| DatagramSocket::from_std(socket).map_err(|e| e.to_string());
    let (rtp_socket, rtcp_socket) = (register(sockets.rtp)?, register(sockets.rtcp)?);
    let (
        mut device,
        AudioIo {
            mut capture,
            mut playout,
        },
    ) = open_device(call, &audio, events)?;
    let device_rate = device.sample_rate();
    let mut echo = if device.acoustic_echo() {
        Some(DeviceEchoCanceller::new(device_rate).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let mut muted = false;
    let codec = negotiated.codec;
    let mut up = FrameResampler::new(device_rate, codec.clock_rate()).map_err(|e| e.to_string())?;
    let mut down =
        FrameResampler::new(codec.clock_rate(), device_rate).map_err(|e| e.to_string())?;
    let start = Instant::now().into_std();
    let (ssrc, seq, ts) = {
        let mut rng = rand::rng();
        (
            rng.random::<u32>(),
            rng.random::<u16>(),
            rng.random::<u32>(),
        )
    };
    let mut stream =
        MediaStream::new(start, &negotiated, ssrc, seq, ts).map_err(|e| e.to_string())?;
    let mut rtcp = RtcpSession::new(start, ssrc, codec, rand::rng().random());
    let mut remote_rtcp = SocketAddr::new(
        negotiated.remote_rtp.ip(),
        negotiated.remote_rtp.port().saturating_add(1),
    );
    let mut sending = matches!(
        negotiated.direction,
        Direction::SendRecv | Direction::SendOnly
    );
    let codec_frame = stream.frame_samples();
    let device_frame = device_rate as usize / 50;
    let mut carry = 0.0f64;
    // Both sides follow the device's clock, polled every few ms: a
    // captured frame goes out as soon as the device has delivered it, and
    // a frame is decoded for playout only when the device's queue runs
    // low, so it plays as soon as it is made and a packet that arrived
    // meanwhile is in time for it (NetEq's pull model). A device that
    // stops delivering is padded with silence after two frames' time.
    let mut ticker = tokio::time::interval(FRAME_POLL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_capture = Instant::now();
    let low_water = device_rate as usize * PLAYOUT_LOW_WATER_MS / 1000;
    let mut rtp_buf = vec![0u8; 2048];
    let mut rtcp_buf = vec![0u8; 2048];
    let report = |rtcp: &RtcpSession| Event::CallStats {
        call,
        codec: codec.name().to_owned(),
        stats: rtcp.stats(),
    };
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                loop {
                    let exact = f64::from(device_rate) / 50.0 + carry;
                    let n = exact.floor() as usize;
                    if capture.slots() < n && last_capture.elapsed() < DEVICE_STALL {
                        break;
                    }
                    last_capture = Instant::now();
                    carry = exact - n as f64;
                    let mut frame = Vec::with_capacity(n);
                    while frame.len() < n {
                        match capture.pop() {
                            Ok(s) => frame.push(s),
                            Err(_) => break,
                        }
                    }
                    frame.resize(n, 0);
                    if let Some(echo) = echo.as_mut() {
                        match echo.capture(&frame) {
                            Ok(clean) => frame = clean,
                            Err(e) => tracing::warn!(error = %e, "echo cancellation failed"),
                        }
                    }
                    if muted {
                        frame.fill(0);
                    }
                    let pcm = up.process(&frame, codec_frame);
                    if sending {
                        let timestamp = stream.rtp_timestamp();
                        match stream.send_frame(&pcm) {
                            Ok(packet) => {
                                rtcp.on_rtp_sent(timestamp, packet.len());
                                let _ = rtp_socket.send_to(&packet, stream.remote());
                            }
                            Err(e) => tracing::warn!(error = %e, "encoding failed"),
                        }
                    }
                }
                let now = Instant::now().into_std();
                while playout.buffer().capacity() - playout.slots() < low_water {
                    let heard = down.process(&stream.play_frame(now), device_frame);
                    if let Some(echo) = echo.as_mut() {
                        if let Err(e) = echo.render(&heard) {
                            tracing::warn!(error = %e, "echo reference dropped");
                        }
                    }
                    let pad = stream.playout_pad();
                    let pad_samples = (f64::from(device_rate) * pad.as_secs_f64()) as usize;
                    // A full ring means the device stalled: drop, don't block.
                    for s in std::iter::repeat_n(0, pad_samples).chain(heard) {
                        let _ = playout.push(s);
                    }
                }
                while let Some(ev) = stream.poll_event() {
                    match ev {
                        MediaEvent::Dtmf(digit) => {
                            let _ = events.send(Event::Dtmf { call, digit });
                        }
                        MediaEvent::NoMedia { silent_for } => {
                            let _ = events.send(Event::Error { message: format!("call {call}: no media for {} s", silent_for.as_secs()) });
                        }
                        MediaEvent::MediaResumed => {}
                        MediaEvent::Latched(rtp) => {
                            remote_rtcp = SocketAddr::new(rtp.ip(), rtp.port().saturating_add(1));
                        }
                    }
                }
                if let Some(packet) = rtcp.handle_timeout(now) {
                    let _ = rtcp_socket.send_to(&packet, remote_rtcp);
                    let _ = events.send(report(&rtcp));
                }
            }
            received = rtp_socket.recv_from(&mut rtp_buf) => {
                if let Ok((len, from)) = received {
                    let now = Instant::now().into_std();
                    if let Some((ssrc, seq, ts)) = stream.handle_datagram(now, from, &rtp_buf[..len]) {
                        rtcp.on_rtp_received(now, ssrc, seq, ts);
                    }
                }
            }
            received = rtcp_socket.recv_from(&mut rtcp_buf) => {
                if let Ok((len, from)) = received {
                    if from.ip() == stream.remote().ip() {
                        let now = Instant::now().into_std();
                        match rtcp.handle_rtcp(now, &rtcp_buf[..len]) {
                            Ok(()) => {
                                // Symmetric RTCP: answer where reports come from.
                                remote_rtcp = from;
                                if let Some(fraction) = rtcp.remote_fraction_lost() {
                                    let percent = u8::try_from(u32::from(fraction) * 100 / 256).unwrap_or(100);
                                    let _ = stream.set_expected_loss(percent);
                                }
                            }
                            Err(e) => tracing::debug!(error = %e, "RTCP dropped"),
                        }
                    }
                }
            }
            command = commands.recv() => match command {
                Some(MediaCommand::Dtmf(digits)) => {
                    if let Err(e) = stream.send_dtmf(&digits) {
                        let _ = events.send(Event::Error { message: format!("call {call}: {e}") });
                    }
                }
                Some(MediaCommand::Direction(d)) => sending = matches!(d, Direction::SendRecv | Direction::SendOnly),
                Some(MediaCommand::Mute(m)) => muted = m,
                None => break,
            },
        }
    }
    let _ = events.send(report(&rtcp));
    tracing::info!(
        call,
        stats = ?stream.stats(),
        echo_return_loss_enhancement_db = ?echo.as_ref().and_then(DeviceEchoCanceller::echo_return_loss_enhancement),
        "call media ended"
    );
    device.stop().map_err(|e| e.to_string())
}
