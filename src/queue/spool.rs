//! Assembling one message while it arrives: envelope first, then the body
//! as the session decodes it. Small messages stay in memory; past
//! [`MEM_LIMIT`] the bytes spill to a private file under `tmp/`, so a 50 MiB
//! message never sits in RAM. The payload checksum is computed on the way in.
//!
//! Spill files are written through the page cache and either copied into a
//! segment and removed within a second (most never reach the device), or
//! become a message file of their own when they are big.

use std::path::PathBuf;
use std::sync::Arc;

use super::record::{HEADER_LEN, Hold, MessageMeta};
use super::storage::{OpenMode, Storage, StorageFile};

/// Bytes of a message held in memory before it spills to a file. Bounded so
/// that 64 concurrent sessions cost at most a couple of MiB.
pub const MEM_LIMIT: usize = 32 * 1024;

/// A message being received. Dropping it (client gone, size exceeded)
/// removes any spill file: nothing half-written is left behind.
#[derive(Debug)]
pub struct SpoolWriter {
    pub(super) meta: MessageMeta,
    /// Header room (zeroes, filled in at commit) + payload so far, or, once
    /// spilled, the not-yet-written tail of the payload.
    pub(super) buf: Vec<u8>,
    pub(super) spill: Option<Spill>,
    /// Payload octets so far (envelope + body).
    pub(super) payload_len: u64,
    pub(super) crc: crc32fast::Hasher,
    /// Body octets so far.
    pub(super) body_len: u64,
    /// Skip the queue's size limits (failure reports must never be refused).
    pub(super) internal: bool,
    /// This is a message's delay warning: queuing it records that the
    /// warning went out ([`SpoolWriter::mark_delay_warning`]).
    pub(super) delay_warning: bool,
    tmp_dir: PathBuf,
    fs: Arc<dyn Storage>,
    /// Counted among the queue's open transactions until handed over.
    pub(super) receiving: Option<super::Transaction>,
}

/// The spill file: header room + payload, at `path`.
#[derive(Debug)]
pub(super) struct Spill {
    pub(super) file: Box<dyn StorageFile>,
    pub(super) path: PathBuf,
    /// Bytes written so far.
    len: u64,
}

impl SpoolWriter {
    pub(super) fn new(
        meta: MessageMeta,
        tmp_dir: PathBuf,
        internal: bool,
        fs: Arc<dyn Storage>,
    ) -> SpoolWriter {
        let env = meta.encode();
        let mut buf = Vec::with_capacity(HEADER_LEN + env.len() + 4096);
        buf.resize(HEADER_LEN, 0);
        buf.extend_from_slice(&env);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&env);
        SpoolWriter {
            meta,
            buf,
            spill: None,
            payload_len: env.len() as u64,
            crc,
            body_len: 0,
            internal,
            delay_warning: false,
            tmp_dir,
            fs,
            receiving: None,
        }
    }

    /// The queue id this message will have.
    pub fn id(&self) -> u64 {
        self.meta.id
    }

    /// The envelope the message is stored with.
    pub fn envelope(&self) -> &crate::smtp::Envelope {
        &self.meta.envelope
    }

    /// This report is the delay warning of the message it is finished
    /// with ([`super::Queue::finish`]): the queue records that it went out,
    /// with that message's state, so it goes out once.
    pub fn mark_delay_warning(&mut self) {
        self.delay_warning = true;
    }

    /// Body octets written so far.
    pub fn body_len(&self) -> u64 {
        self.body_len
    }

    /// Append body bytes.
    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.crc.update(data);
        self.payload_len += data.len() as u64;
        self.body_len += data.len() as u64;
        self.buf.extend_from_slice(data);
        if self.buf.len() >= MEM_LIMIT {
            self.flush_to_spill()?;
        }
        Ok(())
    }

    fn flush_to_spill(&mut self) -> std::io::Result<()> {
        if self.spill.is_none() {
            let path = self.tmp_dir.join(format!("{:X}", self.meta.id));
            let file = self.fs.open(&path, OpenMode::CreateNew)?;
            self.spill = Some(Spill { file, path, len: 0 });
        }
        if let Some(s) = self.spill.as_mut() {
            s.file.write_all_at(&self.buf, s.len)?;
            s.len += self.buf.len() as u64;
        }
        self.buf.clear();
        Ok(())
    }

    /// Make the spill file complete on its own (everything flushed), so the
    /// store can read or keep it; with `to_file`, an in-memory message gets
    /// a spill file too (it is about to become a file of its own).
    pub(super) fn finish_spill(&mut self, to_file: bool) -> std::io::Result<()> {
        if (self.spill.is_some() || to_file) && !self.buf.is_empty() {
            self.flush_to_spill()?;
        }
        Ok(())
    }

    /// Record length on disk: header + payload.
    pub(super) fn record_len(&self) -> u64 {
        HEADER_LEN as u64 + self.payload_len
    }
}

impl SpoolWriter {
    /// What the rules decided once the message was in: new recipients
    /// (`None` keeps them), held or not, a named route. The envelope is
    /// written before the body, so a change rewrites the record's start:
    /// in memory for a small message; a spilled one is copied once into a
    /// new spill file (rare, and gone from the page cache within a second
    /// like any spill).
    pub fn set_disposition(
        &mut self,
        envelope: Option<crate::smtp::Envelope>,
        hold: Hold,
        route: Option<String>,
    ) -> std::io::Result<()> {
        let old_meta_len = self.meta.encode().len();
        if let Some(e) = envelope {
            self.meta.envelope = Arc::new(e);
        }
        self.meta.hold = hold;
        self.meta.route = route;
        let env = self.meta.encode();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&env);
        match self.spill.take() {
            None => {
                // One move of the body in place, not a copy out and back.
                self.buf
                    .splice(HEADER_LEN..HEADER_LEN + old_meta_len, env.iter().copied());
                crc.update(&self.buf[HEADER_LEN + env.len()..]);
            }
            Some(old) => {
                let path = self.tmp_dir.join(format!("{:X}.d", self.meta.id));
                let file = self.fs.open(&path, OpenMode::CreateNew)?;
                let mut head = vec![0u8; HEADER_LEN];
                head.extend_from_slice(&env);
                file.write_all_at(&head, 0)?;
                let mut at = head.len() as u64;
                let mut from = (HEADER_LEN + old_meta_len) as u64;
                let mut chunk = Vec::with_capacity(MEM_LIMIT);
                while from < old.len {
                    chunk.clear();
                    let n = usize::try_from((old.len - from).min(MEM_LIMIT as u64))
                        .unwrap_or(MEM_LIMIT);
                    old.file.read_append_at(&mut chunk, n, from)?;
                    crc.update(&chunk);
                    file.write_all_at(&chunk, at)?;
                    from += n as u64;
                    at += n as u64;
                }
                crc.update(&self.buf);
                let _ = self.fs.remove(&old.path);
                self.spill = Some(Spill {
                    file,
                    path,
                    len: at,
                });
            }
        }
        self.crc = crc;
        self.payload_len = env.len() as u64 + self.body_len;
        Ok(())
    }

    /// No longer receiving (handed to the writer, or abandoned).
    pub(super) fn stop_receiving(&mut self) {
        self.receiving = None;
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        if let Some(s) = self.spill.take() {
            // Best effort: a leftover is removed at the next start anyway.
            let _ = self.fs.remove(&s.path);
        }
    }
}
