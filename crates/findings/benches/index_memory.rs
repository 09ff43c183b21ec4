//! Memory of the triage's image index, per distinct image: the index is kept per image,
//! cluster image, registry and node (not per key), so its size follows the fleet's
//! catalogue. Counts the bytes the index allocates (a counting allocator), for fleets of
//! growing catalogues, and prints `BENCH` lines for `scripts/bench.sh`.
//!
//! `cargo bench -p unseen-findings --bench index_memory [-- --smoke]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use unseen_findings::Index;
use unseen_model::Windows;
use unseen_normalize::Key;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Every image runs in every cluster on a few nodes, as a fleet's catalogue does.
fn fill(images: usize, clusters: usize, nodes_per_cluster: usize) -> (Index, usize) {
    let windows = Windows::default();
    let registries = [
        "123456789012.dkr.ecr.us-east-1.amazonaws.com",
        "europe-west1-docker.pkg.dev",
        "ghcr.io",
        "docker.io",
    ];
    let mut index = Index::default();
    for i in 0..images {
        let image = format!("{}/team-{}/service-{i}", registries[i % 4], i % 37);
        for c in 0..clusters {
            let node = format!(
                "ip-10-{c}-{}-{}.ec2.internal",
                i % 250,
                i % nodes_per_cluster
            );
            let key = Key {
                host: node.clone(),
                cluster: format!("prod-eu-west-1-{c:02}"),
                node,
                image: image.clone(),
            };
            index.observe(&key, 1_767_225_600 + i as i64, &windows);
        }
        // A store takes what is dirty with every batch.
        if i % 1000 == 999 {
            index.take_dirty();
        }
    }
    index.take_dirty();
    let entries = index.len();
    (index, entries)
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let sizes: &[usize] = if smoke {
        &[300]
    } else {
        &[300, 10_000, 100_000]
    };
    for &images in sizes {
        let before = LIVE.load(Ordering::Relaxed);
        let (index, entries) = fill(images, 3, 30);
        let bytes = LIVE.load(Ordering::Relaxed) - before;
        println!(
            "index of {images} images in 3 clusters (90 nodes): {entries} entries, {bytes} bytes, {} bytes per image, {} per entry",
            bytes as usize / images,
            bytes as usize / entries
        );
        println!(
            "BENCH index_{images}_bytes_per_image={}",
            bytes as usize / images
        );
        drop(index);
    }
}
