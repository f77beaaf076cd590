//! The plugin's own choice when no pod's scheduler annotation fits: the best-linked set of the
//! available GPUs (NVIDIA allocator pair scores, keeping the leftover's NVLink islands whole) via
//! [`muster_core::gpu_choice::best_gpu_set`], mapped between UUIDs and indices.

use crate::devices::DeviceList;

/// Best set of `size` among `available` including `must_include`, as UUIDs in index order.
/// IDs this plugin does not know are ignored (they cannot be scored); `None` if no set exists.
pub fn best_set(
    list: &DeviceList,
    available: &[String],
    must_include: &[String],
    size: usize,
) -> Option<Vec<String>> {
    let index_of = |uuid: &String| {
        list.gpus
            .iter()
            .find(|g| &g.uuid == uuid)
            .map(|g| g.index as usize)
    };
    let available: Vec<usize> = available.iter().filter_map(index_of).collect();
    let must: Vec<usize> = must_include
        .iter()
        .map(index_of)
        .collect::<Option<Vec<_>>>()?;
    let chosen = muster_core::gpu_choice::best_gpu_set(&list.links, &available, &must, size)?;
    chosen
        .into_iter()
        .map(|i| {
            list.gpus
                .iter()
                .find(|g| g.index as usize == i)
                .map(|g| g.uuid.clone())
        })
        .collect()
}
