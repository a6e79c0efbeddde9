//! Opening the compute device in the browser: WebGPU when `navigator.gpu` gives an adapter,
//! else WebAssembly on the CPU (Flex), saying why.

use burn::tensor::Device;

use super::scope;
use crate::backend::BackendKind;
use crate::worker::protocol::BackendPref;
use crate::worker::router::OpenedDevice;

async fn cpu(fallback: String) -> OpenedDevice {
    // The threaded build's device opens once its pool runs, and says on how many threads.
    #[cfg(feature = "threads")]
    let adapter = match super::threads::ready().await {
        1 => "WebAssembly, one thread".to_string(),
        n => format!("WebAssembly, {n} threads"),
    };
    #[cfg(not(feature = "threads"))]
    let adapter = "WebAssembly".to_string();
    // The products' fused multiply-add, where the browser has relaxed SIMD (www/fused.js).
    let adapter = if crate::model::tiled_gemm::fused::on() { format!("{adapter}, fused multiply-add") } else { adapter };
    OpenedDevice { device: Device::flex(), kind: BackendKind::Flex, adapter, software: true, fallback: Some(fallback), max_binding: None }
}

pub async fn open(pref: BackendPref) -> OpenedDevice {
    if pref == BackendPref::Cpu {
        return cpu("chosen on the page (?backend=cpu)".into()).await;
    }
    let has_gpu = js_sys::Reflect::get(&scope().navigator(), &"gpu".into()).is_ok_and(|g| !g.is_undefined() && !g.is_null());
    if !has_gpu {
        return cpu("this browser has no WebGPU (navigator.gpu is missing; Chrome/Edge 113+ or a flag in Firefox/Safari)".into()).await;
    }
    webgpu().await
}

/// WebGPU's adapter and device; the CPU when the browser gives none.
#[cfg(feature = "gpu")]
async fn webgpu() -> OpenedDevice {
    match Device::wgpu_options().init_with_setup_async().await {
        Ok((device, setup)) => {
            let info = setup.adapter.get_info();
            let software = format!("{:?}", info.device_type) == "Cpu";
            // Browsers often hide the adapter's name; show what they do tell.
            let told: Vec<&str> = [info.name.as_str(), info.driver.as_str(), info.driver_info.as_str()]
                .into_iter()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            let adapter = if told.is_empty() { "adapter name hidden by the browser".to_string() } else { told.join(" ") };
            let max_binding = Some(setup.device.limits().max_storage_buffer_binding_size as u64);
            OpenedDevice { device, kind: BackendKind::Wgpu, adapter, software, fallback: None, max_binding }
        }
        Err(e) => {
            // wgpu's own words (every backend it did not try) are for developers: in the console.
            web_sys::console::warn_1(&format!("alignlab: no WebGPU adapter: {e}").into());
            cpu("WebGPU gave no usable adapter (the browser offers no GPU it can use: a blocked driver, a \
                 virtual machine, or WebGPU turned off), so the lab runs on the CPU"
                .into())
            .await
        }
    }
}

/// The CPU worker (built without feature `gpu`): the page starts it only when WebGPU is not to be
/// used, so this is reached only if the two disagree.
#[cfg(not(feature = "gpu"))]
async fn webgpu() -> OpenedDevice {
    cpu("this download of the engine is the CPU one; reload the page to get WebGPU".into()).await
}
