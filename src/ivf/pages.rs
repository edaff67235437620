//! Page layout of the ivf index (see the module docs of `ivf`) and the buffer helpers.

use super::{Element, OpClass, Quantizer};
use biomedclip_core::rabitq::{self, Factors};
use pgrx::pg_sys::{self, BlockNumber, Buffer, OffsetNumber, Page};
use std::mem::size_of;

pub const META_BLKNO: BlockNumber = 0;
pub const MAGIC: u32 = 0x4956_4631; // "IVF1"
/// Layout 4 adds the quantizer (and the RaBitQ rotation seed) to the metapage. Layout 3 (the
/// first 0.2.0 builds) stores each list's centroid in the column's precision, as 4 does; layout 2
/// (0.1.0) stored f32 centroids. Both are still read, as flat (unquantized) indexes.
pub const VERSION: u32 = 4;
const COLUMN_CENTROIDS_VERSION: u32 = 3;
const F32_CENTROIDS_VERSION: u32 = 2;
pub const PAGE_ID: u16 = 0xFF91;
pub const INVALID_BLOCK: BlockNumber = pg_sys::InvalidBlockNumber;
const P_NEW: BlockNumber = pg_sys::InvalidBlockNumber;
/// `IndexTupleData` (heap TID + t_info, 8 bytes), then the squared norm (f32) and 4 bytes of
/// padding: where the vector starts in an item.
pub const ITEM_HEADER: usize = 16;
/// A RaBitQ entry: `IndexTupleData`, three f32 factors, the extended-code pointer (block and
/// offset), padding, then the 1-bit code (see `rabitq_item`).
pub const RABITQ_HEADER: usize = 32;
/// An extended-code item: `IndexTupleData`, four f32 factors, then the 4-bit code.
pub const EX_HEADER: usize = 24;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct PageOpaque {
    pub next: BlockNumber,
    pub unused: u16,
    pub page_id: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct MetaData {
    magic: u32,
    version: u32,
    dims: u32,
    lists: u32,
    opclass: i32,
    first_list_blkno: u32,
    // Layout 4:
    quantizer: u32,
    rotation_seed: u64,
}

/// The metapage fields before layout 4.
const META_V3_BYTES: usize = 24;

/// A list tuple starts with its chains' (first, insert) blocks: the entries' chain, and (layout
/// 4) the chain of RaBitQ extended codes; then the centroid.
const LIST_HEADER_V3: usize = 8;
pub const LIST_HEADER_V4: usize = 16;

/// The chains of a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chain {
    /// Entries: full vectors, or RaBitQ 1-bit codes.
    Entries = 0,
    /// RaBitQ extended codes, pointed to by the entries.
    Extended = 1,
}

#[derive(Clone, Copy, Debug)]
pub struct Meta {
    pub dims: usize,
    pub lists: usize,
    pub opclass: OpClass,
    pub first_list_blkno: BlockNumber,
    /// How centroids are stored: the column's element (layout 3) or f32 (layout 2).
    pub centroid_element: Element,
    pub quantizer: Quantizer,
    pub rotation_seed: u64,
    /// Bytes before the centroid in a list tuple.
    pub list_header: usize,
}

impl Meta {
    /// Bytes of one data item (maxaligned), as stored on a page.
    pub fn item_bytes(&self) -> usize {
        match self.quantizer {
            Quantizer::None => maxalign(ITEM_HEADER + self.dims * self.opclass.element.size()),
            Quantizer::RaBitQ => maxalign(RABITQ_HEADER + rabitq::code_bytes(self.dims)),
        }
    }

    /// Bytes of one extended-code item (maxaligned).
    pub fn ex_item_bytes(&self) -> usize {
        maxalign(EX_HEADER + rabitq::ex_code_bytes(self.dims))
    }

    pub fn rotation(&self) -> rabitq::Rotation {
        rabitq::Rotation::new(self.dims, self.rotation_seed)
    }
}

/// One list: where its tuple lives, its chain, and its centroid.
#[derive(Clone, Debug)]
pub struct ListEntry {
    pub blkno: BlockNumber,
    pub offset: OffsetNumber,
    pub start: BlockNumber,
    pub insert: BlockNumber,
    /// The extended-code chain (RaBitQ).
    pub ex_start: BlockNumber,
    pub ex_insert: BlockNumber,
    pub centroid: Vec<f32>,
}

impl ListEntry {
    /// (first, insert) block of a chain.
    pub fn chain(&self, chain: Chain) -> (BlockNumber, BlockNumber) {
        match chain {
            Chain::Entries => (self.start, self.insert),
            Chain::Extended => (self.ex_start, self.ex_insert),
        }
    }
}

pub fn maxalign(n: usize) -> usize {
    (n + 7) & !7
}

/// Largest dimension count whose data item fits on a page (with room for one item pointer).
pub fn max_dims(element: Element) -> usize {
    let usable = pg_sys::BLCKSZ as usize - maxalign(size_of::<pg_sys::PageHeaderData>()) - size_of::<PageOpaque>() - 8;
    let by_page = (usable - ITEM_HEADER) / element.size();
    let by_tinfo = (pg_sys::INDEX_SIZE_MASK as usize - ITEM_HEADER) / element.size();
    // The list tuple (chain pointers + centroid in the column's precision) must fit too; the
    // limits are pgvector's (2,000 for vector, 4,000 for halfvec), which both fit.
    let by_list = (usable - LIST_HEADER_V4 - 8) / element.size();
    let documented = match element {
        Element::F32 => 2000,
        Element::F16 => 4000,
    };
    by_page.min(by_tinfo).min(by_list).min(documented)
}

pub unsafe fn opaque(page: Page) -> *mut PageOpaque {
    pg_sys::PageGetSpecialPointer(page) as *mut PageOpaque
}

pub unsafe fn init_page(page: Page) {
    pg_sys::PageInit(page, pg_sys::BLCKSZ as usize, size_of::<PageOpaque>());
    let o = opaque(page);
    (*o).next = INVALID_BLOCK;
    (*o).unused = 0;
    (*o).page_id = PAGE_ID;
}

/// A new, zero-filled buffer at the end of `fork`, pinned and exclusively locked.
pub unsafe fn new_buffer(index: pg_sys::Relation, fork: pg_sys::ForkNumber::Type) -> Buffer {
    pg_sys::LockRelationForExtension(index, pg_sys::ExclusiveLock as i32);
    let buf = pg_sys::ReadBufferExtended(index, fork, P_NEW, pg_sys::ReadBufferMode::RBM_NORMAL, std::ptr::null_mut());
    pg_sys::UnlockRelationForExtension(index, pg_sys::ExclusiveLock as i32);
    pg_sys::LockBuffer(buf, pg_sys::BUFFER_LOCK_EXCLUSIVE as i32);
    buf
}

pub unsafe fn read_locked(index: pg_sys::Relation, blkno: BlockNumber, mode: u32) -> Buffer {
    let buf = pg_sys::ReadBufferExtended(index, pg_sys::ForkNumber::MAIN_FORKNUM, blkno, pg_sys::ReadBufferMode::RBM_NORMAL, std::ptr::null_mut());
    pg_sys::LockBuffer(buf, mode as i32);
    buf
}

/// Calls `f(page, offset)` for every live item of the chain that starts at `start`, each page
/// under a share lock (checking for interrupts between pages).
pub unsafe fn for_each_item(index: pg_sys::Relation, start: BlockNumber, mut f: impl FnMut(Page, OffsetNumber)) {
    let mut blkno = start;
    while blkno != INVALID_BLOCK {
        pgrx::check_for_interrupts!();
        let buf = read_locked(index, blkno, pg_sys::BUFFER_LOCK_SHARE);
        let page = pg_sys::BufferGetPage(buf);
        for off in 1..=pg_sys::PageGetMaxOffsetNumber(page) {
            if (*pg_sys::PageGetItemId(page, off)).lp_flags() == pg_sys::LP_NORMAL {
                f(page, off);
            }
        }
        blkno = (*opaque(page)).next;
        pg_sys::UnlockReleaseBuffer(buf);
    }
}

/// Writes the metapage contents into an initialized page.
pub unsafe fn write_meta(page: Page, meta: &Meta) {
    let data = MetaData {
        magic: MAGIC,
        version: VERSION,
        dims: meta.dims as u32,
        lists: meta.lists as u32,
        opclass: meta.opclass.code(),
        first_list_blkno: meta.first_list_blkno,
        quantizer: meta.quantizer as u32,
        rotation_seed: meta.rotation_seed,
    };
    let contents = pg_sys::PageGetContents(page) as *mut MetaData;
    contents.write_unaligned(data);
    let header = page as *mut pg_sys::PageHeaderData;
    (*header).pd_lower = ((contents as usize + size_of::<MetaData>()) - page as usize) as u16;
}

pub unsafe fn read_meta(index: pg_sys::Relation) -> Meta {
    let buf = read_locked(index, META_BLKNO, pg_sys::BUFFER_LOCK_SHARE);
    let page = pg_sys::BufferGetPage(buf);
    // Layouts 2 and 3 end after `first_list_blkno`: read only what they wrote.
    let mut data: MetaData = std::mem::zeroed();
    std::ptr::copy_nonoverlapping(pg_sys::PageGetContents(page) as *const u8, &mut data as *mut MetaData as *mut u8, META_V3_BYTES);
    if data.version == VERSION {
        data = (pg_sys::PageGetContents(page) as *const MetaData).read_unaligned();
    }
    pg_sys::UnlockReleaseBuffer(buf);
    if data.magic != MAGIC {
        pgrx::error!("ivf index \"{}\" has no valid metapage", relname(index));
    }
    if ![VERSION, COLUMN_CENTROIDS_VERSION, F32_CENTROIDS_VERSION].contains(&data.version) {
        pgrx::error!("ivf index \"{}\" has layout version {}, this build reads {} to {}; REINDEX it", relname(index), data.version, F32_CENTROIDS_VERSION, VERSION);
    }
    let quantizer = match data.quantizer {
        0 => Quantizer::None,
        1 => Quantizer::RaBitQ,
        _ => pgrx::error!("ivf: corrupt metapage"),
    };
    let opclass = OpClass::from_code(data.opclass).unwrap_or_else(|| pgrx::error!("ivf: corrupt metapage"));
    Meta {
        dims: data.dims as usize,
        lists: data.lists as usize,
        opclass,
        first_list_blkno: data.first_list_blkno,
        centroid_element: if data.version == F32_CENTROIDS_VERSION { Element::F32 } else { opclass.element },
        quantizer,
        rotation_seed: data.rotation_seed,
        list_header: if data.version == VERSION { LIST_HEADER_V4 } else { LIST_HEADER_V3 },
    }
}

pub unsafe fn relname(rel: pg_sys::Relation) -> String {
    std::ffi::CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr()).to_string_lossy().into_owned()
}

unsafe fn add_item(page: Page, item: &[u8]) -> OffsetNumber {
    pg_sys::PageAddItemExtended(page, item.as_ptr() as pg_sys::Item, item.len(), pg_sys::InvalidOffsetNumber, 0)
}

fn list_item(centroid: &[f32], element: Element) -> Vec<u8> {
    let mut item = Vec::with_capacity(LIST_HEADER_V4 + centroid.len() * element.size());
    for _ in 0..4 {
        item.extend_from_slice(&INVALID_BLOCK.to_ne_bytes());
    }
    for &x in centroid {
        match element {
            Element::F32 => item.extend_from_slice(&x.to_ne_bytes()),
            Element::F16 => item.extend_from_slice(&half::f16::from_f32(x).to_bits().to_ne_bytes()),
        }
    }
    item
}

/// Writes list pages for `centroids` starting at the next block of `fork` (no WAL: callers
/// log the pages). Returns the first list block and each list's location.
pub unsafe fn write_lists(index: pg_sys::Relation, fork: pg_sys::ForkNumber::Type, centroids: &[f32], dims: usize, element: Element) -> (BlockNumber, Vec<(BlockNumber, OffsetNumber)>) {
    let mut locations = Vec::new();
    let mut buf = new_buffer(index, fork);
    let first = pg_sys::BufferGetBlockNumber(buf);
    let mut page = pg_sys::BufferGetPage(buf);
    init_page(page);
    for centroid in centroids.chunks_exact(dims) {
        let item = list_item(centroid, element);
        if pg_sys::PageGetFreeSpace(page) < maxalign(item.len()) {
            let next = new_buffer(index, fork);
            (*opaque(page)).next = pg_sys::BufferGetBlockNumber(next);
            pg_sys::MarkBufferDirty(buf);
            pg_sys::UnlockReleaseBuffer(buf);
            buf = next;
            page = pg_sys::BufferGetPage(buf);
            init_page(page);
        }
        let off = add_item(page, &item);
        if off == pg_sys::InvalidOffsetNumber {
            pgrx::error!("ivf: could not add list tuple");
        }
        locations.push((pg_sys::BufferGetBlockNumber(buf), off));
    }
    pg_sys::MarkBufferDirty(buf);
    pg_sys::UnlockReleaseBuffer(buf);
    (first, locations)
}

/// All lists with their centroids, in list order.
pub unsafe fn read_lists(index: pg_sys::Relation, meta: &Meta) -> Vec<ListEntry> {
    let mut out = Vec::with_capacity(meta.lists);
    let mut blkno = meta.first_list_blkno;
    while blkno != INVALID_BLOCK {
        let buf = read_locked(index, blkno, pg_sys::BUFFER_LOCK_SHARE);
        let page = pg_sys::BufferGetPage(buf);
        for off in 1..=pg_sys::PageGetMaxOffsetNumber(page) {
            let item = pg_sys::PageGetItem(page, pg_sys::PageGetItemId(page, off)) as *const u8;
            let block = |i: usize| if i * 4 < meta.list_header { (item.add(4 * i) as *const BlockNumber).read_unaligned() } else { INVALID_BLOCK };
            let bytes = std::slice::from_raw_parts(item.add(meta.list_header), meta.dims * meta.centroid_element.size());
            let centroid = match meta.centroid_element {
                Element::F32 => bytes.chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect(),
                Element::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_bits(u16::from_ne_bytes([c[0], c[1]])).to_f32()).collect(),
            };
            out.push(ListEntry { blkno, offset: off, start: block(0), insert: block(1), ex_start: block(2), ex_insert: block(3), centroid });
        }
        blkno = (*opaque(page)).next;
        pg_sys::UnlockReleaseBuffer(buf);
    }
    out
}

/// (first, insert) block of a chain of the list tuple at `offset` on a locked list page.
pub unsafe fn list_pages(list_buf: Buffer, offset: OffsetNumber, chain: Chain) -> (BlockNumber, BlockNumber) {
    let page = pg_sys::BufferGetPage(list_buf);
    let item = (pg_sys::PageGetItem(page, pg_sys::PageGetItemId(page, offset)) as *const BlockNumber).add(2 * chain as usize);
    (item.read_unaligned(), item.add(1).read_unaligned())
}

/// Updates a chain's pointers in place on a (locked, WAL-registered) list page.
pub unsafe fn set_list_pages(page: Page, offset: OffsetNumber, chain: Chain, start: BlockNumber, insert: BlockNumber) {
    let item = (pg_sys::PageGetItem(page, pg_sys::PageGetItemId(page, offset)) as *mut BlockNumber).add(2 * chain as usize);
    item.write_unaligned(start);
    item.add(1).write_unaligned(insert);
}

/// A data item: IndexTupleData (heap TID, size), squared norm, vector elements.
pub fn data_item(tid: pg_sys::ItemPointerData, sq_norm: f32, vector: &[u8]) -> Vec<u8> {
    let size = maxalign(ITEM_HEADER + vector.len());
    let mut item = vec![0u8; size];
    let header = pg_sys::IndexTupleData { t_tid: tid, t_info: size as u16 };
    unsafe { std::ptr::write_unaligned(item.as_mut_ptr() as *mut pg_sys::IndexTupleData, header) };
    item[8..12].copy_from_slice(&sq_norm.to_ne_bytes());
    item[ITEM_HEADER..ITEM_HEADER + vector.len()].copy_from_slice(vector);
    item
}

/// The heap TID, squared norm and vector bytes of the item at `off`.
pub unsafe fn read_item<'a>(page: Page, off: OffsetNumber, vector_bytes: usize) -> (pg_sys::ItemPointerData, f32, &'a [u8]) {
    let item = pg_sys::PageGetItem(page, pg_sys::PageGetItemId(page, off)) as *const u8;
    let tuple = (item as *const pg_sys::IndexTupleData).read_unaligned();
    let sq_norm = (item.add(8) as *const f32).read_unaligned();
    (tuple.t_tid, sq_norm, std::slice::from_raw_parts(item.add(ITEM_HEADER), vector_bytes))
}

/// Where an extended-code item is (block, offset).
pub type ExPointer = (BlockNumber, OffsetNumber);

/// A RaBitQ entry: IndexTupleData (heap TID, size), residual norm, 1-bit quality, residual .
/// centroid (f32 each), the extended-code item's block and offset, padding, then the 1-bit code.
pub fn rabitq_item(tid: pg_sys::ItemPointerData, f: &Factors, ex: ExPointer, code: &[u8]) -> Vec<u8> {
    let size = maxalign(RABITQ_HEADER + code.len());
    let mut item = vec![0u8; size];
    let header = pg_sys::IndexTupleData { t_tid: tid, t_info: size as u16 };
    unsafe { std::ptr::write_unaligned(item.as_mut_ptr() as *mut pg_sys::IndexTupleData, header) };
    item[8..12].copy_from_slice(&f.norm.to_ne_bytes());
    item[12..16].copy_from_slice(&f.quality.to_ne_bytes());
    item[16..20].copy_from_slice(&f.residual_dot_centroid.to_ne_bytes());
    set_ex_pointer(&mut item, ex);
    item[RABITQ_HEADER..RABITQ_HEADER + code.len()].copy_from_slice(code);
    item
}

/// Sets the extended-code pointer of a RaBitQ entry item.
pub fn set_ex_pointer(entry: &mut [u8], ex: ExPointer) {
    entry[20..24].copy_from_slice(&ex.0.to_ne_bytes());
    entry[24..26].copy_from_slice(&ex.1.to_ne_bytes());
}

/// The heap TID, factors (without the extended ones), extended-code pointer and 1-bit code of
/// the RaBitQ entry at `off`.
#[inline]
pub unsafe fn read_rabitq_item<'a>(page: Page, off: OffsetNumber, code_bytes: usize) -> (pg_sys::ItemPointerData, Factors, ExPointer, &'a [u8]) {
    let item = pg_sys::PageGetItem(page, pg_sys::PageGetItemId(page, off)) as *const u8;
    let tuple = (item as *const pg_sys::IndexTupleData).read_unaligned();
    let f = |at: usize| (item.add(at) as *const f32).read_unaligned();
    let factors = Factors { norm: f(8), quality: f(12), residual_dot_centroid: f(16), ex_dot: 1.0, ex_quality: 1.0 };
    let ex = ((item.add(20) as *const BlockNumber).read_unaligned(), (item.add(24) as *const OffsetNumber).read_unaligned());
    (tuple.t_tid, factors, ex, std::slice::from_raw_parts(item.add(RABITQ_HEADER), code_bytes))
}

/// An extended-code item: IndexTupleData (heap TID, to check that a pointer still leads to its
/// entry), residual norm, residual . centroid, extended dot and quality (f32 each), the code.
pub fn ex_item(tid: pg_sys::ItemPointerData, f: &Factors, ex: &[u8]) -> Vec<u8> {
    let size = maxalign(EX_HEADER + ex.len());
    let mut item = vec![0u8; size];
    let header = pg_sys::IndexTupleData { t_tid: tid, t_info: size as u16 };
    unsafe { std::ptr::write_unaligned(item.as_mut_ptr() as *mut pg_sys::IndexTupleData, header) };
    for (i, x) in [f.norm, f.residual_dot_centroid, f.ex_dot, f.ex_quality].iter().enumerate() {
        item[8 + 4 * i..12 + 4 * i].copy_from_slice(&x.to_ne_bytes());
    }
    item[EX_HEADER..EX_HEADER + ex.len()].copy_from_slice(ex);
    item
}

/// The heap TID, factors and extended code of the item at `off`.
pub unsafe fn read_ex_item<'a>(page: Page, off: OffsetNumber, ex_bytes: usize) -> (pg_sys::ItemPointerData, Factors, &'a [u8]) {
    let item = pg_sys::PageGetItem(page, pg_sys::PageGetItemId(page, off)) as *const u8;
    let tuple = (item as *const pg_sys::IndexTupleData).read_unaligned();
    let f = |at: usize| (item.add(at) as *const f32).read_unaligned();
    let factors = Factors { norm: f(8), quality: 1.0, residual_dot_centroid: f(12), ex_dot: f(16), ex_quality: f(20) };
    (tuple.t_tid, factors, std::slice::from_raw_parts(item.add(EX_HEADER), ex_bytes))
}

/// Adds an item to a page; its offset, or None when it does not fit. Unused line pointers
/// (left by VACUUM on extended-code pages) are reused.
pub unsafe fn try_add_at(page: Page, item: &[u8]) -> Option<OffsetNumber> {
    if pg_sys::PageGetFreeSpace(page) < item.len() {
        return None;
    }
    let off = add_item(page, item);
    (off != pg_sys::InvalidOffsetNumber).then_some(off)
}
