//! Git's smart protocol (v0/v1) as a shallow fetch speaks it, without I/O: the ref
//! advertisement read, the one upload-pack request written, its answer (shallow list,
//! acknowledgement, side-band pack) taken apart as it streams in. Packet-line framing and
//! side-band decoding come from `gix-packetline`.

use std::collections::BTreeSet;
use std::io::Write;

use gix_packetline::{BandRef, PacketLineRef, decode};

/// A malformed or refused exchange, in words for the source's condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The server speaks a protocol this client does not (protocol v2 only).
    #[error("the server speaks {0}")]
    Unsupported(&'static str),
    #[error("the server refused: {0}")]
    Refused(String),
    #[error("malformed answer: {0}")]
    Malformed(String),
}

/// The refs a server advertises, and its capabilities.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Advertisement {
    /// `(name, object id)` in the server's order; peeled tags (`…^{}`) included.
    pub refs: Vec<(String, git2::Oid)>,
    pub capabilities: BTreeSet<String>,
}

impl Advertisement {
    pub fn get(&self, name: &str) -> Option<git2::Oid> {
        self.refs.iter().find(|(n, _)| n == name).map(|(_, o)| *o)
    }

    pub fn has(&self, capability: &str) -> bool {
        self.capabilities.contains(capability)
    }

    /// Tag names (without `refs/tags/`), peeled entries left out.
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.refs
            .iter()
            .filter_map(|(n, _)| n.strip_prefix("refs/tags/"))
            .filter(|t| !t.ends_with("^{}"))
    }
}

fn text(line: &[u8]) -> Result<&str, ProtocolError> {
    let s = std::str::from_utf8(line)
        .map_err(|_| ProtocolError::Malformed("a line that is not UTF-8".into()))?;
    Ok(s.strip_suffix('\n').unwrap_or(s))
}

fn oid(hex: &str) -> Result<git2::Oid, ProtocolError> {
    if hex.len() != 40 {
        return Err(ProtocolError::Malformed(format!(
            "{:?} is not an object id",
            short(hex)
        )));
    }
    git2::Oid::from_str(hex)
        .map_err(|_| ProtocolError::Malformed(format!("{:?} is not an object id", short(hex))))
}

/// The first whole packet line of `buf` and the bytes it takes; `None` until it is whole.
fn next_line(buf: &[u8]) -> Result<Option<(PacketLineRef<'_>, usize)>, ProtocolError> {
    match decode::streaming(buf) {
        Ok(decode::Stream::Complete {
            line,
            bytes_consumed,
        }) => Ok(Some((line, bytes_consumed))),
        Ok(decode::Stream::Incomplete { .. }) => Ok(None),
        Err(e) => Err(ProtocolError::Malformed(format!("bad packet line: {e}"))),
    }
}

/// At most 80 characters of what a server sent, for a message.
fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Reads the answer to `GET …/info/refs?service=git-upload-pack` as it streams in, keeping
/// the capabilities and only the refs `keep` names (a server may advertise hundreds of
/// thousands of refs; a fetch needs one, or the tags).
pub struct AdvertisementReader<F> {
    buf: Vec<u8>,
    adv: Advertisement,
    first_ref: bool,
    keep: F,
}

impl<F: Fn(&str) -> bool> AdvertisementReader<F> {
    pub fn new(keep: F) -> Self {
        Self {
            buf: Vec::new(),
            adv: Advertisement::default(),
            first_ref: true,
            keep,
        }
    }

    pub fn feed(&mut self, data: &[u8]) -> Result<(), ProtocolError> {
        self.buf.extend_from_slice(data);
        let mut at = 0;
        while let Some((line, used)) = next_line(&self.buf[at..])? {
            at += used;
            if let PacketLineRef::Data(data) = line {
                let line = text(data)?.to_string();
                self.line(&line)?;
            }
        }
        self.buf.drain(..at);
        Ok(())
    }

    fn line(&mut self, line: &str) -> Result<(), ProtocolError> {
        if line.starts_with("# service=") {
            return Ok(());
        }
        if line.starts_with("version 2") {
            return Err(ProtocolError::Unsupported("protocol version 2 only"));
        }
        if let Some(message) = line.strip_prefix("ERR ") {
            return Err(ProtocolError::Refused(short(message)));
        }
        let (reference, caps) = match line.split_once('\0') {
            Some((r, c)) => (r, Some(c)),
            None => (line, None),
        };
        if let Some(caps) = caps.filter(|_| self.first_ref) {
            self.adv.capabilities = caps.split(' ').map(str::to_string).collect();
        }
        self.first_ref = false;
        let (hex, name) = reference
            .split_once(' ')
            .ok_or_else(|| ProtocolError::Malformed(format!("ref line {:?}", short(line))))?;
        let id = oid(hex)?;
        // An empty repository advertises its capabilities on a placeholder.
        if name != "capabilities^{}" && (self.keep)(name) {
            self.adv.refs.push((name.to_string(), id));
        }
        Ok(())
    }

    pub fn finish(self) -> Result<Advertisement, ProtocolError> {
        if !self.buf.is_empty() {
            return Err(ProtocolError::Malformed("the answer ends mid-line".into()));
        }
        Ok(self.adv)
    }
}

/// Reads a whole advertisement, every ref kept.
#[cfg(test)]
fn parse_advertisement(body: &[u8]) -> Result<Advertisement, ProtocolError> {
    let mut reader = AdvertisementReader::new(|_: &str| true);
    reader.feed(body)?;
    reader.finish()
}

fn pkt(out: &mut Vec<u8>, line: &str) {
    out.extend_from_slice(format!("{:04x}", line.len() + 4).as_bytes());
    out.extend_from_slice(line.as_bytes());
}

/// What one shallow fetch asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask<'a> {
    pub want: git2::Oid,
    /// The repository's shallow boundary (its `shallow` file), so the server never leaves
    /// out an object only an unfetched parent holds.
    pub shallow: &'a [git2::Oid],
    /// Commits the repository has (the ref's previous tip): the pack leaves their objects out.
    pub haves: &'a [git2::Oid],
}

/// Whether the answer comes in side-band packets, and whether it starts with a shallow list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    pub side_band: bool,
    pub deepen: bool,
}

/// The body of the one `POST …/git-upload-pack`: the want with the capabilities this
/// client uses (of those the server offers), `deepen 1`, the haves and `done`, so the
/// server answers with the shallow list and the pack at once.
pub fn upload_request(adv: &Advertisement, ask: &Ask<'_>, agent: &str) -> (Vec<u8>, Framing) {
    let framing = Framing {
        side_band: adv.has("side-band-64k") || adv.has("side-band"),
        deepen: adv.has("shallow"),
    };
    let mut first = format!("want {}", ask.want);
    let band = if adv.has("side-band-64k") {
        Some("side-band-64k")
    } else if adv.has("side-band") {
        Some("side-band")
    } else {
        None
    };
    for cap in band
        .into_iter()
        .chain(["ofs-delta", "shallow", "no-progress"])
    {
        if adv.has(cap) {
            first.push(' ');
            first.push_str(cap);
        }
    }
    if adv.capabilities.iter().any(|c| c.starts_with("agent=")) {
        first.push_str(&format!(" agent={agent}"));
    }
    first.push('\n');
    let mut out = Vec::new();
    pkt(&mut out, &first);
    if framing.deepen {
        for s in ask.shallow {
            pkt(&mut out, &format!("shallow {s}\n"));
        }
        pkt(&mut out, "deepen 1\n");
    }
    out.extend_from_slice(b"0000");
    for h in ask.haves {
        pkt(&mut out, &format!("have {h}\n"));
    }
    pkt(&mut out, "done\n");
    (out, framing)
}

/// Changes to the repository's shallow boundary the server announced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ShallowUpdate {
    pub shallow: Vec<git2::Oid>,
    pub unshallow: Vec<git2::Oid>,
}

impl ShallowUpdate {
    /// The boundary after this update.
    pub fn apply(&self, current: &[git2::Oid]) -> Vec<git2::Oid> {
        let mut set: BTreeSet<git2::Oid> = current.iter().copied().collect();
        set.extend(self.shallow.iter().copied());
        for u in &self.unshallow {
            set.remove(u);
        }
        set.into_iter().collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Shallow,
    Acknowledgement,
    Pack,
    /// No side-band: every byte after the acknowledgement is the pack.
    RawPack,
    Done,
}

/// Takes the upload-pack answer apart as its bytes arrive, writing the pack to `pack`.
pub struct Answer {
    phase: Phase,
    side_band: bool,
    buf: Vec<u8>,
    update: ShallowUpdate,
    pack_bytes: u64,
}

impl Answer {
    pub fn new(framing: Framing) -> Self {
        Self {
            phase: if framing.deepen {
                Phase::Shallow
            } else {
                Phase::Acknowledgement
            },
            side_band: framing.side_band,
            buf: Vec::new(),
            update: ShallowUpdate::default(),
            pack_bytes: 0,
        }
    }

    /// Feeds the next bytes of the answer.
    pub fn feed(&mut self, data: &[u8], pack: &mut impl Write) -> Result<(), ProtocolError> {
        if self.phase == Phase::RawPack {
            return self.write(data, pack);
        }
        self.buf.extend_from_slice(data);
        let mut at = 0;
        while self.phase != Phase::RawPack {
            let Some((line, used)) = next_line(&self.buf[at..])? else {
                break;
            };
            at += used;
            match (self.phase, line) {
                (Phase::Done, _) => {}
                (Phase::Shallow, PacketLineRef::Flush) => self.phase = Phase::Acknowledgement,
                (Phase::Shallow, PacketLineRef::Data(d)) => {
                    let l = text(d)?;
                    if let Some(id) = l.strip_prefix("shallow ") {
                        self.update.shallow.push(oid(id)?);
                    } else if let Some(id) = l.strip_prefix("unshallow ") {
                        self.update.unshallow.push(oid(id)?);
                    } else {
                        return Err(unexpected(l));
                    }
                }
                (Phase::Acknowledgement, PacketLineRef::Data(d)) => {
                    let l = text(d)?;
                    if l != "NAK" && !l.starts_with("ACK ") {
                        return Err(unexpected(l));
                    }
                    self.phase = if self.side_band {
                        Phase::Pack
                    } else {
                        Phase::RawPack
                    };
                }
                (Phase::Pack, PacketLineRef::Flush) => self.phase = Phase::Done,
                (Phase::Pack, line @ PacketLineRef::Data(_)) => match line.decode_band() {
                    Ok(BandRef::Data(d)) => {
                        self.pack_bytes += d.len() as u64;
                        pack.write_all(d).map_err(write_failed)?;
                    }
                    Ok(BandRef::Progress(_)) => {}
                    Ok(BandRef::Error(e)) => {
                        return Err(ProtocolError::Refused(short(
                            String::from_utf8_lossy(e).trim(),
                        )));
                    }
                    Err(e) => return Err(ProtocolError::Malformed(format!("bad side band: {e}"))),
                },
                (_, line) => return Err(ProtocolError::Malformed(format!("unexpected {line:?}"))),
            }
        }
        let rest = self.buf.split_off(at);
        self.buf = rest;
        if self.phase == Phase::RawPack && !self.buf.is_empty() {
            let raw = std::mem::take(&mut self.buf);
            self.write(&raw, pack)?;
        }
        Ok(())
    }

    fn write(&mut self, data: &[u8], pack: &mut impl Write) -> Result<(), ProtocolError> {
        self.pack_bytes += data.len() as u64;
        pack.write_all(data).map_err(write_failed)
    }

    /// The answer ended: it must have carried a whole pack.
    pub fn finish(self) -> Result<ShallowUpdate, ProtocolError> {
        let complete = match self.phase {
            Phase::Done => true,
            Phase::RawPack => self.buf.is_empty(),
            _ => false,
        };
        if !complete || self.pack_bytes == 0 {
            return Err(ProtocolError::Malformed(
                "the answer ended before its pack".into(),
            ));
        }
        Ok(self.update)
    }
}

fn unexpected(line: &str) -> ProtocolError {
    match line.strip_prefix("ERR ") {
        Some(message) => ProtocolError::Refused(short(message)),
        None => ProtocolError::Malformed(format!("unexpected line {:?}", short(line))),
    }
}

fn write_failed(e: std::io::Error) -> ProtocolError {
    ProtocolError::Malformed(format!("the pack does not index: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const C: &str = "3333333333333333333333333333333333333333";

    fn body(lines: &[Option<&str>]) -> Vec<u8> {
        let mut out = Vec::new();
        for l in lines {
            match l {
                Some(l) => pkt(&mut out, l),
                None => out.extend_from_slice(b"0000"),
            }
        }
        out
    }

    fn band(n: u8, data: &[u8]) -> Vec<u8> {
        let mut out = format!("{:04x}", data.len() + 5).into_bytes();
        out.push(n);
        out.extend_from_slice(data);
        out
    }

    fn id(s: &str) -> git2::Oid {
        git2::Oid::from_str(s).unwrap()
    }

    #[test]
    fn the_advertisement_gives_refs_and_the_first_lines_capabilities() {
        let b = body(&[
            Some("# service=git-upload-pack\n"),
            None,
            Some(&format!(
                "{A} HEAD\0multi_ack side-band-64k ofs-delta shallow agent=git/2.39\n"
            )),
            Some(&format!("{A} refs/heads/main\n")),
            Some(&format!("{B} refs/tags/v1.2.0\n")),
            Some(&format!("{C} refs/tags/v1.2.0^{{}}\n")),
            None,
        ]);
        let adv = parse_advertisement(&b).unwrap();
        assert_eq!(adv.get("refs/heads/main"), Some(id(A)));
        assert_eq!(adv.get("refs/tags/v1.2.0"), Some(id(B)));
        assert_eq!(adv.tags().collect::<Vec<_>>(), ["v1.2.0"]);
        assert!(adv.has("shallow") && adv.has("side-band-64k") && !adv.has("thin-pack"));
    }

    #[test]
    fn only_the_refs_asked_for_are_kept_however_the_body_is_cut() {
        let b = body(&[
            Some(&format!("{A} HEAD\0shallow side-band-64k\n")),
            Some(&format!("{A} refs/heads/main\n")),
            Some(&format!("{B} refs/pull/1/head\n")),
            Some(&format!("{C} refs/tags/v1\n")),
            None,
        ]);
        for size in [1, 5, b.len()] {
            let mut reader = AdvertisementReader::new(|n: &str| n.starts_with("refs/tags/"));
            for chunk in b.chunks(size) {
                reader.feed(chunk).unwrap();
            }
            let adv = reader.finish().unwrap();
            assert_eq!(adv.refs, [("refs/tags/v1".to_string(), id(C))]);
            assert!(adv.has("shallow"));
        }
    }

    #[test]
    fn an_empty_repository_and_refusals_and_protocol_v2() {
        let zero = "0".repeat(40);
        let empty = body(&[Some(&format!("{zero} capabilities^{{}}\0shallow\n")), None]);
        let adv = parse_advertisement(&empty).unwrap();
        assert!(adv.refs.is_empty() && adv.has("shallow"));
        let err = body(&[Some("ERR access denied\n")]);
        assert_eq!(
            parse_advertisement(&err),
            Err(ProtocolError::Refused("access denied".into()))
        );
        let v2 = body(&[Some("version 2\n"), Some("fetch\n"), None]);
        assert!(matches!(
            parse_advertisement(&v2),
            Err(ProtocolError::Unsupported(_))
        ));
        assert!(matches!(
            parse_advertisement(b"00zzbroken"),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            parse_advertisement(format!("0032{A} refs/heads/m").as_bytes()),
            Err(ProtocolError::Malformed(_))
        ));
        let not_an_id = body(&[Some("xyz refs/heads/main\n")]);
        assert!(matches!(
            parse_advertisement(&not_an_id),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn the_request_asks_for_depth_one_and_says_done_in_the_same_body() {
        let adv = Advertisement {
            refs: vec![],
            capabilities: [
                "side-band-64k",
                "side-band",
                "ofs-delta",
                "shallow",
                "deepen-relative",
                "no-progress",
                "agent=git/2.39",
            ]
            .map(str::to_string)
            .into(),
        };
        let ask = Ask {
            want: id(A),
            shallow: &[id(B)],
            haves: &[id(C)],
        };
        let (b, framing) = upload_request(&adv, &ask, "gantry/1");
        assert_eq!(
            String::from_utf8(b).unwrap(),
            format!(
                "006dwant {A} side-band-64k ofs-delta shallow no-progress agent=gantry/1\n\
                 0035shallow {B}\n000ddeepen 1\n0000\
                 0032have {C}\n0009done\n"
            )
        );
        assert_eq!(
            framing,
            Framing {
                side_band: true,
                deepen: true
            }
        );
        // A server without shallow support gets a whole fetch, and nothing it did not offer.
        let plain = Advertisement::default();
        let (b, framing) = upload_request(
            &plain,
            &Ask {
                want: id(A),
                shallow: &[],
                haves: &[],
            },
            "gantry/1",
        );
        assert_eq!(
            String::from_utf8(b).unwrap(),
            format!("0032want {A}\n00000009done\n")
        );
        assert!(!framing.deepen && !framing.side_band);
    }

    fn answer(
        framing: Framing,
        chunks: &[&[u8]],
    ) -> Result<(ShallowUpdate, Vec<u8>), ProtocolError> {
        let mut a = Answer::new(framing);
        let mut pack = Vec::new();
        for c in chunks {
            a.feed(c, &mut pack)?;
        }
        a.finish().map(|u| (u, pack))
    }

    #[test]
    fn the_answer_streams_its_shallow_list_and_its_side_band_pack_in_any_chunks() {
        let mut all = body(&[
            Some(&format!("shallow {A}\n")),
            Some(&format!("unshallow {B}\n")),
            None,
            Some("NAK\n"),
        ]);
        all.extend(band(2, b"Counting objects\r"));
        all.extend(band(1, b"PACK0123"));
        all.extend(band(1, b"4567"));
        all.extend(b"0000");
        let framing = Framing {
            side_band: true,
            deepen: true,
        };
        for size in [1, 3, 7, all.len()] {
            let chunks: Vec<&[u8]> = all.chunks(size).collect();
            let (update, pack) = answer(framing, &chunks).unwrap();
            assert_eq!(pack, b"PACK01234567");
            assert_eq!(update.shallow, [id(A)]);
            assert_eq!(update.unshallow, [id(B)]);
        }
        assert_eq!(
            ShallowUpdate {
                shallow: vec![id(A)],
                unshallow: vec![id(B)]
            }
            .apply(&[id(B), id(C)]),
            [id(A), id(C)]
        );
    }

    #[test]
    fn without_side_band_the_pack_follows_the_acknowledgement_raw() {
        let mut all = body(&[Some(&format!("ACK {C}\n"))]);
        all.extend(b"PACKraw bytes 0000 not lines");
        let framing = Framing {
            side_band: false,
            deepen: false,
        };
        for size in [2, all.len()] {
            let chunks: Vec<&[u8]> = all.chunks(size).collect();
            let (_, pack) = answer(framing, &chunks).unwrap();
            assert_eq!(pack, b"PACKraw bytes 0000 not lines");
        }
    }

    #[test]
    fn an_error_band_a_cut_answer_or_a_stray_line_fails_with_its_cause() {
        let framing = Framing {
            side_band: true,
            deepen: true,
        };
        let mut err = body(&[None, Some("NAK\n")]);
        err.extend(band(3, b"upload-pack: not our ref\n"));
        assert_eq!(
            answer(framing, &[&err]).unwrap_err(),
            ProtocolError::Refused("upload-pack: not our ref".into())
        );
        let refused = body(&[Some("ERR upload-pack: not our ref 1111\n")]);
        assert!(matches!(
            answer(framing, &[&refused]).unwrap_err(),
            ProtocolError::Refused(m) if m.contains("not our ref")
        ));
        let mut cut = body(&[None, Some("NAK\n")]);
        cut.extend(band(1, b"PACK"));
        assert!(matches!(
            answer(framing, &[&cut]).unwrap_err(),
            ProtocolError::Malformed(m) if m.contains("ended before its pack")
        ));
        let no_pack = body(&[None, Some("NAK\n"), None]);
        assert!(answer(framing, &[&no_pack]).is_err());
        let stray = body(&[Some("hello\n")]);
        assert!(matches!(
            answer(framing, &[&stray]).unwrap_err(),
            ProtocolError::Malformed(_)
        ));
        assert!(matches!(
            answer(framing, &[b"zzzz"]).unwrap_err(),
            ProtocolError::Malformed(m) if m.contains("bad packet line")
        ));
    }
}
