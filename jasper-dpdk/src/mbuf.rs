//! Mempools and owned mbufs.

use std::ffi::CString;
use std::ptr::NonNull;

use jasper_ffi as ffi;

use crate::eal::Eal;
use crate::{last_error, DpdkError};

/// A packet-mbuf pool.
#[derive(Debug)]
pub struct Mempool {
    ptr: NonNull<ffi::rte_mempool>,
}

// SAFETY: DPDK mempools are multi-producer/multi-consumer safe; the pointer
// is only used through DPDK's thread-safe API.
unsafe impl Send for Mempool {}
// SAFETY: as above.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Create a pool of `n` mbufs with the default data room (2 KiB + headroom).
    pub fn new(eal: &Eal, name: &str, n: u32) -> Result<Mempool, DpdkError> {
        Self::with_data_room(eal, name, n, ffi::RTE_MBUF_DEFAULT_BUF_SIZE as u16)
    }

    /// Create a pool of `n` mbufs with `data_room` bytes each (headroom
    /// included): small rooms for header mbufs.
    pub fn with_data_room(
        _eal: &Eal,
        name: &str,
        n: u32,
        data_room: u16,
    ) -> Result<Mempool, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError {
            op: "rte_pktmbuf_pool_create",
            code: libc::EINVAL,
            msg: "pool name contains NUL".into(),
        })?;
        // SAFETY: the EAL is initialized (`_eal`); the name is a valid C string.
        let p = unsafe {
            ffi::rte_pktmbuf_pool_create(
                cname.as_ptr(),
                n.max(63),
                256.min(n / 4),
                0,
                data_room,
                ffi::rte_socket_id() as i32,
            )
        };
        NonNull::new(p)
            .map(|ptr| Mempool { ptr })
            .ok_or_else(|| last_error("rte_pktmbuf_pool_create"))
    }
    /// Raw pointer for DPDK calls.
    pub fn as_ptr(&self) -> *mut ffi::rte_mempool {
        self.ptr.as_ptr()
    }
    /// Free mbufs.
    pub fn available(&self) -> u32 {
        // SAFETY: valid pool pointer.
        unsafe { ffi::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }
    /// Mbufs in use (allocated and not yet freed): 0 after a clean run.
    pub fn in_use(&self) -> u32 {
        // SAFETY: valid pool pointer.
        unsafe { ffi::rte_mempool_in_use_count(self.ptr.as_ptr()) }
    }
    /// Allocate `out.len()` mbufs at once (all or none).
    pub fn alloc_bulk(&self, out: &mut Vec<Mbuf>, n: usize) -> bool {
        let mut raw: [*mut ffi::rte_mbuf; 64] = [std::ptr::null_mut(); 64];
        let n = n.min(64);
        // SAFETY: valid pool; `raw` has room for n pointers, all filled on success.
        if unsafe { ffi::jasper_pktmbuf_alloc_bulk(self.ptr.as_ptr(), raw.as_mut_ptr(), n as u32) }
            != 0
        {
            return false;
        }
        for p in &raw[..n] {
            // SAFETY: freshly allocated, non-null on success, owned by us.
            out.push(Mbuf(unsafe { NonNull::new_unchecked(*p) }));
        }
        true
    }

    /// Allocate `out.len()` (at most 64) raw mbufs at once (all or none),
    /// for the caller to wrap or hand to `tx_burst`.
    pub(crate) fn alloc_raw_bulk(&self, out: &mut [*mut ffi::rte_mbuf]) -> bool {
        // SAFETY: valid pool; `out` has room for out.len() pointers, all
        // filled with fresh mbufs on success (return 0), none on failure.
        unsafe {
            ffi::jasper_pktmbuf_alloc_bulk(self.ptr.as_ptr(), out.as_mut_ptr(), out.len() as u32)
                == 0
        }
    }

    /// Allocate one mbuf.
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: valid pool pointer; a null return means exhausted.
        NonNull::new(unsafe { ffi::jasper_pktmbuf_alloc(self.ptr.as_ptr()) }).map(Mbuf)
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: the pool is no longer referenced by ports (the backend drops
        // the port first) and every Mbuf borrowed from it was freed or leaked
        // on purpose; rte_mempool_free tolerates in-use objects.
        unsafe { ffi::rte_mempool_free(self.ptr.as_ptr()) }
    }
}

/// An owned mbuf (chain). Freed on drop. `Send` (may move between threads),
/// not `Sync`.
#[repr(transparent)]
#[derive(Debug)]
pub struct Mbuf(NonNull<ffi::rte_mbuf>);

// SAFETY: an mbuf is exclusively owned by this value; DPDK allows freeing it
// from any thread.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Take ownership of a raw mbuf.
    ///
    /// # Safety
    /// `p` must be a valid mbuf not owned by anything else.
    pub unsafe fn from_raw(p: NonNull<ffi::rte_mbuf>) -> Mbuf {
        Mbuf(p)
    }
    /// Give up ownership (e.g. to `tx_burst`).
    pub fn into_raw(self) -> *mut ffi::rte_mbuf {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }
    /// The raw mbuf (still owned by `self`).
    pub fn as_raw(&self) -> *mut ffi::rte_mbuf {
        self.0.as_ptr()
    }
    /// Data length of the first segment.
    pub fn data_len(&self) -> usize {
        // SAFETY: valid mbuf; a plain field read (what rte_pktmbuf_data_len
        // does), without the call into the shim.
        unsafe { (*self.0.as_ptr()).data_len as usize }
    }
    /// Total packet length.
    pub fn pkt_len(&self) -> usize {
        // SAFETY: valid mbuf; a plain field read (rte_pktmbuf_pkt_len).
        unsafe { (*self.0.as_ptr()).pkt_len as usize }
    }
    /// Segments in the chain.
    pub fn segments(&self) -> u16 {
        // SAFETY: valid mbuf; a plain field read.
        unsafe { (*self.0.as_ptr()).nb_segs }
    }
    /// Reference count of this mbuf's data.
    pub fn refcnt(&self) -> u16 {
        // SAFETY: valid mbuf.
        unsafe { ffi::jasper_mbuf_refcnt(self.0.as_ptr()) }
    }
    /// Add `n` references to this mbuf (`rte_mbuf_refcnt_update`): each
    /// becomes a chain that ends in this segment and frees it once. The
    /// caller must keep the count below 2^16.
    ///
    /// # Safety
    /// Every added reference must be handed to exactly one chain (or freed),
    /// else the mbuf leaks or is freed while in use.
    pub(crate) unsafe fn add_refs(&self, n: u16) {
        // SAFETY: valid mbuf; the caller owns the new references.
        unsafe { ffi::jasper_mbuf_refcnt_update(self.0.as_ptr(), n as i16) };
    }
    /// Start of the first segment's data (`rte_pktmbuf_mtod`, as field reads).
    fn mtod(&self) -> *mut u8 {
        // SAFETY: valid mbuf: data_off is within the buffer at buf_addr.
        unsafe {
            let m = self.0.as_ptr();
            ((*m).buf_addr as *mut u8).add((*m).data_off as usize)
        }
    }
    /// Start loading the first segment's bytes `from .. from + len` (clamped
    /// to the data) into the cache, 64-byte line by line, without waiting:
    /// a burst's frames, just written by the NIC, are not in the cache yet,
    /// and asking for all of them at once overlaps the misses.
    #[inline]
    pub fn prefetch(&self, from: usize, len: usize) {
        let end = self.data_len().min(from.saturating_add(len));
        #[cfg(target_arch = "x86_64")]
        {
            let base = self.mtod() as *const i8;
            let mut off = from;
            while off < end {
                // SAFETY: a prefetch is a hint that never faults and reads
                // nothing into the program; `off` is within the data anyway.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        base.add(off),
                    )
                };
                off += 64;
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = end;
    }
    /// The first segment's bytes.
    pub fn data(&self) -> &[u8] {
        // SAFETY: mtod points at data_len initialized bytes owned by the mbuf,
        // valid while `self` is borrowed.
        unsafe { std::slice::from_raw_parts(self.mtod() as *const u8, self.data_len()) }
    }
    /// The first segment's bytes, mutable. Only on direct (non-cloned) mbufs
    /// whose data is not shared.
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `data`; exclusive borrow of the owner. Callers only
        // mutate received mbufs before cloning them.
        unsafe { std::slice::from_raw_parts_mut(self.mtod(), self.data_len()) }
    }
    /// Append `len` bytes; returns them, or `None` when the segment is full.
    pub fn append(&mut self, len: u16) -> Option<&mut [u8]> {
        // SAFETY: valid mbuf; a non-null return points at `len` writable bytes.
        let p = unsafe { ffi::jasper_pktmbuf_append(self.0.as_ptr(), len) };
        // SAFETY: see above.
        (!p.is_null())
            .then(|| unsafe { std::slice::from_raw_parts_mut(p as *mut u8, len as usize) })
    }
    /// Drop `len` bytes from the front.
    pub fn adj(&mut self, len: u16) -> bool {
        // SAFETY: valid mbuf.
        !unsafe { ffi::jasper_pktmbuf_adj(self.0.as_ptr(), len) }.is_null()
    }
    /// Keep only the first `len` bytes of a single-segment mbuf.
    pub fn truncate(&mut self, len: usize) {
        let cur = self.data_len();
        if len < cur {
            // SAFETY: valid single-segment mbuf; shrinking data_len/pkt_len
            // within the segment keeps it consistent (what rte_pktmbuf_trim does).
            unsafe {
                let m = self.0.as_ptr();
                (*m).data_len = len as u16;
                (*m).pkt_len = len as u32;
            }
        }
    }
    /// Chain `tail` after this mbuf (header + payload).
    pub fn chain(self, tail: Mbuf) -> Result<Mbuf, (Mbuf, Mbuf)> {
        // SAFETY: both are valid, exclusively owned mbufs; on success the
        // tail belongs to the head's chain.
        let rc = unsafe { ffi::jasper_pktmbuf_chain(self.0.as_ptr(), tail.0.as_ptr()) };
        if rc == 0 {
            std::mem::forget(tail);
            Ok(self)
        } else {
            Err((self, tail))
        }
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf (chain); freeing decrements shared data refs.
        unsafe { ffi::jasper_pktmbuf_free(self.0.as_ptr()) }
    }
}
