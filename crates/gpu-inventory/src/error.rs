//! Typed errors: every NVML failure says which call and which GPU.

use nvml_wrapper::error::NvmlError;

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// An NVML call failed (including `FailedToLoadSymbol` when the library lacks the symbol).
    #[error("NVML {call} failed{}: {source}", gpu.map(|g| format!(" on GPU {g}")).unwrap_or_default())]
    Nvml {
        call: &'static str,
        gpu: Option<u32>,
        #[source]
        source: NvmlError,
    },
    /// NVML answered something Muster's model cannot represent.
    #[error("unexpected NVML answer from {call}{}: {detail}", gpu.map(|g| format!(" on GPU {g}")).unwrap_or_default())]
    Unexpected {
        call: &'static str,
        gpu: Option<u32>,
        detail: String,
    },
    #[error("starting the health watcher thread: {0}")]
    Thread(#[from] std::io::Error),
}

impl InventoryError {
    pub(crate) fn nvml(call: &'static str, gpu: Option<u32>, source: NvmlError) -> Self {
        InventoryError::Nvml { call, gpu, source }
    }

    /// The loaded library does not export a function this call needs.
    pub fn is_missing_symbol(&self) -> bool {
        matches!(
            self,
            InventoryError::Nvml {
                source: NvmlError::FailedToLoadSymbol(_),
                ..
            }
        )
    }

    /// The GPU fell off the bus.
    pub fn is_gpu_lost(&self) -> bool {
        matches!(
            self,
            InventoryError::Nvml {
                source: NvmlError::GpuLost,
                ..
            }
        )
    }
}

/// Attaches call/GPU context to an NVML result.
pub(crate) trait Context<T> {
    fn ctx(self, call: &'static str, gpu: Option<u32>) -> Result<T, InventoryError>;
}

impl<T> Context<T> for Result<T, NvmlError> {
    fn ctx(self, call: &'static str, gpu: Option<u32>) -> Result<T, InventoryError> {
        self.map_err(|e| InventoryError::nvml(call, gpu, e))
    }
}

/// How one per-GPU query ended, for queries that may legitimately be absent.
pub(crate) enum Answer<T> {
    Value(T),
    /// `NOT_SUPPORTED` on this GPU.
    Unsupported,
    Lost,
}

/// Classifies a per-GPU query: unsupported and lost are states, everything else is an error.
pub(crate) fn answer<T>(
    r: Result<T, NvmlError>,
    call: &'static str,
    gpu: u32,
) -> Result<Answer<T>, InventoryError> {
    match r {
        Ok(v) => Ok(Answer::Value(v)),
        Err(NvmlError::NotSupported) => Ok(Answer::Unsupported),
        Err(NvmlError::GpuLost) => Ok(Answer::Lost),
        Err(e) => Err(InventoryError::nvml(call, Some(gpu), e)),
    }
}
