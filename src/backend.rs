//! Choosing a compute device, and reading tensors back to the host.

use std::fmt;
use std::str::FromStr;

#[cfg(feature = "engine")]
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The compute backends alignlab runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// burn's NdArray CPU backend.
    Ndarray,
    /// burn's Flex CPU backend (gemm-based matmul, SIMD).
    Flex,
    /// wgpu: Vulkan natively (lavapipe without a GPU), WebGPU in the browser.
    Wgpu,
}

impl BackendKind {
    pub const ALL: [BackendKind; 3] = [BackendKind::Ndarray, BackendKind::Flex, BackendKind::Wgpu];

    pub fn name(self) -> &'static str {
        match self {
            Self::Ndarray => "ndarray",
            Self::Flex => "flex",
            Self::Wgpu => "wgpu",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ndarray" | "cpu" => Ok(Self::Ndarray),
            "flex" => Ok(Self::Flex),
            "wgpu" | "gpu" | "vulkan" | "webgpu" => Ok(Self::Wgpu),
            other => Err(Error::Invalid(format!("unknown backend '{other}'; use ndarray, flex or wgpu"))),
        }
    }
}

/// A device ready for use and a line describing it for people.
#[cfg(feature = "engine")]
pub struct DeviceInfo {
    pub device: Device,
    pub kind: BackendKind,
    pub description: String,
}

/// Opens a native device. wgpu is pinned to Vulkan (lavapipe on a machine without a GPU), and the
/// adapter's name is reported so a silent software fallback is visible.
#[cfg(feature = "engine")]
#[cfg(not(target_arch = "wasm32"))]
pub fn open(kind: BackendKind) -> Result<DeviceInfo> {
    match kind {
        #[allow(deprecated)]
        BackendKind::Ndarray => {
            Ok(DeviceInfo { device: Device::ndarray(), kind, description: "NdArray (CPU)".into() })
        }
        BackendKind::Flex => Ok(DeviceInfo { device: Device::flex(), kind, description: "Flex (CPU)".into() }),
        #[cfg(not(feature = "gpu"))]
        BackendKind::Wgpu => Err(Error::Device("this alignlab was built without the GPU backend (Cargo feature `gpu`); use --backend flex".into())),
        #[cfg(feature = "gpu")]
        BackendKind::Wgpu => {
            use std::sync::OnceLock;
            // wgpu may be initialised once per process; later calls share the first device.
            static WGPU: OnceLock<std::result::Result<(Device, String), String>> = OnceLock::new();
            let res = WGPU.get_or_init(|| {
                use burn::tensor::wgpu::WgpuBackend;
                Device::wgpu_options()
                    .graphics_api(WgpuBackend::Vulkan)
                    .init_with_setup()
                    .map(|(device, setup)| {
                        let info = setup.adapter.get_info();
                        (device, format!("wgpu/Vulkan on {} ({:?})", info.name, info.device_type))
                    })
                    .map_err(|e| format!("{e}"))
            });
            match res {
                Ok((device, description)) => Ok(DeviceInfo { device: device.clone(), kind, description: description.clone() }),
                Err(e) => Err(Error::Device(format!(
                    "no Vulkan adapter could be opened ({e}); install a Vulkan driver \
                     (on a machine without a GPU: apt-get install mesa-vulkan-drivers) or use --backend flex"
                ))),
            }
        }
    }
}

/// Reads a float tensor to the host. The one read every engine path goes through: on WebGPU a
/// read must be awaited (a blocking read panics in the browser), so the engine is async inside
/// and the native API wraps it in `block_on`.
#[cfg(feature = "engine")]
pub async fn read_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    let data = t.into_data_async().await.map_err(|e| Error::Device(format!("reading a tensor back failed: {e:?}")))?;
    #[cfg(target_arch = "wasm32")]
    yield_if_due().await;
    data.try_into_vec_as::<f32>().map_err(|e| Error::Device(format!("reading a tensor back failed: {e:?}")))
}

/// Whether `device` computes on the CPU (Flex or NdArray, with or without autodiff).
#[cfg(feature = "engine")]
pub fn is_cpu(device: &Device) -> bool {
    #[cfg(not(target_arch = "wasm32"))]
    #[allow(deprecated)]
    if device.clone().inner() == Device::ndarray() {
        return true;
    }
    is_flex(device)
}

/// Whether `device` is Flex, with or without autodiff.
#[cfg(feature = "engine")]
pub fn is_flex(device: &Device) -> bool {
    device.clone().inner() == Device::flex()
}

/// Runs an engine future to completion on the calling thread (native only).
#[cfg(feature = "engine")]
#[cfg(not(target_arch = "wasm32"))]
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}

/// On a CPU backend in the browser every read is ready at once, so a long job would never give
/// the worker's event loop a turn: no Cancel message could get in. Yield every ~30 ms.
#[cfg(feature = "engine")]
#[cfg(target_arch = "wasm32")]
pub(crate) async fn yield_if_due() {
    use std::cell::Cell;
    use web_time::Instant;
    thread_local!(static LAST: Cell<Option<Instant>> = const { Cell::new(None) });
    let now = Instant::now();
    let due = LAST.with(|l| l.get().is_none_or(|t| now.duration_since(t).as_millis() >= 30));
    if due {
        gloo_timers::future::TimeoutFuture::new(0).await;
        LAST.with(|l| l.set(Some(Instant::now())));
    }
}
