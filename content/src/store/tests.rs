#![allow(clippy::unwrap_used)] // test code: a panic is a test failure
use super::*;
use olc_protocol::BlobUpload;
use olc_protocol::blob::MemoryBlobs;

const MIB: usize = CHUNK_SIZE as usize;

fn blob(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + usize::from(salt) * 7) % 251) as u8)
        .collect()
}

#[test]
fn round_trips_and_ids() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path(), None).unwrap();
    let bytes = blob(1000, 1);
    let id = store.put(&bytes).unwrap();
    assert_eq!(id, ContentId::of(&bytes));
    assert!(store.contains(&id));
    assert_eq!(store.get(&id).unwrap().unwrap(), bytes);
    assert_eq!(store.len_of(&id), Some(1000));
    assert_eq!(fs::read(store.path(&id).unwrap()).unwrap(), bytes);
    assert_eq!(store.total_bytes(), 1000);
    // Storing the same bytes again changes nothing.
    assert_eq!(store.put(&bytes).unwrap(), id);
    assert_eq!(store.total_bytes(), 1000);
    assert_eq!(store.ids(), vec![id]);
    // The empty blob is a blob too.
    let empty = store.put(&[]).unwrap();
    assert_eq!(store.get(&empty).unwrap().unwrap(), Vec::<u8>::new());
    let absent = ContentId::of(b"absent");
    assert!(!store.contains(&absent));
    assert_eq!(store.get(&absent).unwrap(), None);
    assert_eq!(store.path(&absent), None);
    assert_eq!(store.len_of(&absent), None);
    // No temporary files are left behind.
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn verified_put_refuses_other_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path(), None).unwrap();
    let id = ContentId::of(b"right");
    let err = store.put_verified(&id, b"wrong").unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&id.to_string()), "{text}");
    assert!(
        text.contains(&ContentId::of(b"wrong").to_string()),
        "{text}"
    );
    assert!(!store.contains(&id));
    assert_eq!(store.total_bytes(), 0);
    store.put_verified(&id, b"right").unwrap();
    assert_eq!(store.get(&id).unwrap().unwrap(), b"right");
}

#[test]
fn eviction_is_least_recently_used_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path(), Some(3000)).unwrap();
    let a = store.put(&blob(1000, 1)).unwrap();
    let b = store.put(&blob(1000, 2)).unwrap();
    let c = store.put(&blob(1000, 3)).unwrap();
    // Using `a` makes `b` the oldest.
    store.get(&a).unwrap().unwrap();
    let d = store.put(&blob(1000, 4)).unwrap();
    assert!(!store.contains(&b));
    assert!(!dir.path().join(b.to_string()).exists());
    for id in [a, c, d] {
        assert!(store.contains(&id));
    }
    assert_eq!(store.total_bytes(), 3000);
    assert_eq!(store.ids(), vec![c, a, d]);
    // `path` counts as a use as well.
    store.path(&c).unwrap();
    let e = store.put(&blob(2000, 5)).unwrap();
    assert_eq!(store.ids(), vec![c, e]);
    assert!(store.total_bytes() <= 3000);
    // Bigger than the whole budget: refused outright.
    assert!(matches!(
        store.put(&blob(3001, 6)),
        Err(BlobStoreError::TooLarge { .. })
    ));
    assert_eq!(store.ids(), vec![c, e]);
}

#[test]
fn pinned_blobs_are_never_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path(), Some(2000)).unwrap();
    let a = store.put(&blob(1000, 1)).unwrap();
    store.pin(&a);
    store.pin(&a);
    let b = store.put(&blob(1000, 2)).unwrap();
    let c = store.put(&blob(1000, 3)).unwrap();
    assert!(store.contains(&a));
    assert!(!store.contains(&b));
    assert!(store.contains(&c));
    // Nothing left to evict but pinned blobs: the new blob does not fit.
    store.pin(&c);
    assert!(matches!(
        store.put(&blob(1000, 4)),
        Err(BlobStoreError::Full { .. })
    ));
    store.unpin(&c);
    // Pins are counted: one unpin of two leaves `a` pinned.
    store.unpin(&a);
    let d = store.put(&blob(1000, 5)).unwrap();
    assert!(store.contains(&a) && store.contains(&d) && !store.contains(&c));
    store.unpin(&a);
    let e = store.put(&blob(1000, 6)).unwrap();
    assert!(!store.contains(&a) && store.contains(&d) && store.contains(&e));
    // A pin taken before the blob arrives protects it once it does.
    let f_bytes = blob(1000, 7);
    let f = ContentId::of(&f_bytes);
    store.pin(&f);
    store.put_verified(&f, &f_bytes).unwrap();
    store.put(&blob(1000, 8)).unwrap();
    store.put(&blob(1000, 9)).unwrap();
    assert!(store.contains(&f));
}

#[test]
fn reopening_keeps_blobs_sizes_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = {
        let store = BlobStore::open(dir.path(), None).unwrap();
        let a = store.put(&blob(1000, 1)).unwrap();
        let b = store.put(&blob(500, 2)).unwrap();
        (a, b)
    };
    // Make `b` clearly older on disk than `a`.
    let old = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    File::options()
        .append(true)
        .open(dir.path().join(b.to_string()))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let store = BlobStore::open(dir.path(), None).unwrap();
    assert_eq!(store.ids(), vec![b, a]);
    assert_eq!(store.len_of(&a), Some(1000));
    assert_eq!(store.len_of(&b), Some(500));
    assert_eq!(store.total_bytes(), 1500);
    assert_eq!(store.get(&b).unwrap().unwrap(), blob(500, 2));
    drop(store);
    // A smaller budget on reopening evicts the oldest.
    let store = BlobStore::open(dir.path(), Some(1200)).unwrap();
    assert_eq!(store.ids(), vec![b]);
}

#[test]
fn bad_file_names_and_leftovers_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let real = blob(10, 1);
    let id = ContentId::of(&real);
    fs::write(dir.path().join(id.to_string()), &real).unwrap();
    fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    fs::write(dir.path().join(id.to_string().to_uppercase()), b"x").unwrap();
    fs::write(dir.path().join("123-4.tmp"), b"half a blob").unwrap();
    fs::create_dir(dir.path().join(ContentId::of(b"d").to_string())).unwrap();
    let store = BlobStore::open(dir.path(), None).unwrap();
    assert_eq!(store.ids(), vec![id]);
    assert_eq!(store.total_bytes(), 10);
    assert!(!dir.path().join("123-4.tmp").exists());
    assert!(dir.path().join("notes.txt").exists());
}

#[test]
fn serves_chunks_like_memory_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path(), None).unwrap();
    let memory = MemoryBlobs::new();
    for len in [0, 100, 2 * MIB + MIB / 2] {
        let bytes = blob(len, 3);
        let id = store.put(&bytes).unwrap();
        assert_eq!(memory.insert(bytes.clone()), id);
        let outline = store.outline(&id).unwrap();
        assert_eq!(Some(&outline), memory.outline(&id).as_ref());
        outline.verify(&id, u64::MAX).unwrap();
        // Cached the second time.
        assert_eq!(store.outline(&id).unwrap(), outline);
        for index in 0..outline.chunk_count() + 1 {
            let chunk = store.chunk(&id, index);
            assert_eq!(chunk, memory.chunk(&id, index), "chunk {index}");
            if let Some(chunk) = chunk {
                outline.verify_chunk(&id, index, &chunk).unwrap();
            }
        }
    }
    let absent = ContentId::of(b"absent");
    assert_eq!(store.outline(&absent), None);
    assert_eq!(store.chunk(&absent, 0), None);
}

fn pieces(bytes: &[u8], piece: usize) -> Vec<BlobUpload> {
    let id = ContentId::of(bytes);
    let mut out: Vec<BlobUpload> = bytes
        .chunks(piece)
        .enumerate()
        .map(|(i, data)| BlobUpload {
            id,
            total: bytes.len() as u64,
            offset: (i * piece) as u64,
            data: data.to_vec(),
        })
        .collect();
    if out.is_empty() {
        out.push(BlobUpload {
            id,
            total: 0,
            offset: 0,
            data: Vec::new(),
        });
    }
    out
}

#[test]
fn uploads_in_order_complete() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path(), None).unwrap();
    let mut uploads = Uploads::new(10 * CHUNK_SIZE, 4);
    let bytes = blob(2 * MIB + 17, 4);
    let id = ContentId::of(&bytes);
    let parts = pieces(&bytes, MIB);
    let n = parts.len();
    for (i, up) in parts.into_iter().enumerate() {
        let state = uploads.receive(&store, up).unwrap();
        if i + 1 < n {
            assert_eq!(
                state,
                UploadState::Partial {
                    received: ((i + 1) * MIB) as u64
                }
            );
        } else {
            assert_eq!(state, UploadState::Complete);
        }
    }
    assert_eq!(store.get(&id).unwrap().unwrap(), bytes);
    assert_eq!(uploads.pending(), 0);
    // Sending it again is answered at once.
    let again = pieces(&bytes, MIB).remove(0);
    assert_eq!(
        uploads.receive(&store, again).unwrap(),
        UploadState::AlreadyHad
    );
    // The empty blob completes with its single empty piece.
    let empty = pieces(&[], 1).remove(0);
    assert_eq!(
        uploads.receive(&store, empty).unwrap(),
        UploadState::Complete
    );
}

#[test]
fn uploads_out_of_order_are_refused_and_resumable() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path(), None).unwrap();
    let mut uploads = Uploads::new(1 << 20, 4);
    let bytes = blob(300, 5);
    let id = ContentId::of(&bytes);
    let parts = pieces(&bytes, 100);
    // A first piece that is not at offset 0.
    assert!(matches!(
        uploads.receive(&store, parts[1].clone()),
        Err(BlobStoreError::OutOfOrder {
            expected: 0,
            got: 100,
            ..
        })
    ));
    uploads.receive(&store, parts[0].clone()).unwrap();
    // Skipping a piece, or repeating one, is refused; the upload survives.
    assert!(matches!(
        uploads.receive(&store, parts[2].clone()),
        Err(BlobStoreError::OutOfOrder { expected: 100, .. })
    ));
    assert!(matches!(
        uploads.receive(&store, parts[0].clone()),
        Err(BlobStoreError::OutOfOrder { expected: 100, .. })
    ));
    uploads.receive(&store, parts[1].clone()).unwrap();
    assert_eq!(
        uploads.receive(&store, parts[2].clone()).unwrap(),
        UploadState::Complete
    );
    assert!(store.contains(&id));

    // A changed total abandons the upload.
    let other = blob(300, 6);
    let mut parts = pieces(&other, 100);
    uploads.receive(&store, parts[0].clone()).unwrap();
    parts[1].total = 400;
    assert!(matches!(
        uploads.receive(&store, parts[1].clone()),
        Err(BlobStoreError::TotalChanged { .. })
    ));
    assert_eq!(uploads.pending(), 0);
    // So does a piece that runs past the total.
    let mut parts = pieces(&other, 100);
    uploads.receive(&store, parts[0].clone()).unwrap();
    parts[1].data = vec![0; 250];
    assert!(matches!(
        uploads.receive(&store, parts[1].clone()),
        Err(BlobStoreError::Overrun { .. })
    ));
    assert_eq!(uploads.pending(), 0);
}

#[test]
fn uploads_with_the_wrong_hash_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path(), None).unwrap();
    let mut uploads = Uploads::new(1 << 20, 4);
    let claimed = ContentId::of(b"what was promised");
    let mut parts = pieces(&blob(200, 7), 100);
    for p in &mut parts {
        p.id = claimed;
    }
    uploads.receive(&store, parts[0].clone()).unwrap();
    let err = uploads.receive(&store, parts[1].clone()).unwrap_err();
    assert!(matches!(err, BlobStoreError::Mismatch { expected, .. } if expected == claimed));
    assert!(store.ids().is_empty());
    assert_eq!(uploads.pending(), 0);
    let leftovers = fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(leftovers, 0);
}

#[test]
fn uploads_too_big_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path(), Some(500)).unwrap();
    let mut uploads = Uploads::new(1000, 4);
    let big = pieces(&blob(1001, 8), 100).remove(0);
    assert!(matches!(
        uploads.receive(&store, big),
        Err(BlobStoreError::UploadTooLarge { .. })
    ));
    // Within the upload limit but over the store's budget.
    let over_budget = pieces(&blob(600, 8), 100).remove(0);
    assert!(matches!(
        uploads.receive(&store, over_budget),
        Err(BlobStoreError::TooLarge { .. })
    ));
    let mut uploads = Uploads::new(10 * CHUNK_SIZE, 4);
    let huge_piece = BlobUpload {
        id: ContentId::of(b"x"),
        total: 2 * CHUNK_SIZE,
        offset: 0,
        data: vec![0; MIB + 1],
    };
    assert!(matches!(
        uploads.receive(&store, huge_piece),
        Err(BlobStoreError::PieceTooLarge { .. })
    ));
    assert_eq!(uploads.pending(), 0);
}

#[test]
fn the_oldest_partial_upload_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path(), None).unwrap();
    let mut uploads = Uploads::new(1 << 20, 2);
    let blobs: Vec<Vec<u8>> = (0..3).map(|i| blob(200, 10 + i)).collect();
    for b in &blobs {
        uploads.receive(&store, pieces(b, 100).remove(0)).unwrap();
    }
    assert_eq!(uploads.pending(), 2);
    // The first upload was dropped: its second piece is out of order now.
    assert!(matches!(
        uploads.receive(&store, pieces(&blobs[0], 100).remove(1)),
        Err(BlobStoreError::OutOfOrder { expected: 0, .. })
    ));
    for b in &blobs[1..] {
        assert_eq!(
            uploads.receive(&store, pieces(b, 100).remove(1)).unwrap(),
            UploadState::Complete
        );
    }
    // Only the dropped upload's temporary file was cleaned, the rest became blobs.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
}
