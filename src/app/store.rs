//! What the user made survives a reload: preferences, ratings, ideal answers, prompts, runs,
//! the last adapter and the settings live in IndexedDB (rexie), one record per collection.
//! A write that fails (storage full or refused) is reported; the data stays in memory.
//!
//! Records are stored as `{version, data}` ([`VERSION`]); a record from before versions (the bare
//! value) still reads. A record that cannot be read (damaged, or from a newer version) is copied
//! aside under `unreadable:<key>:<time>` before anything can overwrite it, and offered for
//! download on the Data tab.

use std::cell::RefCell;

use rexie::{ObjectStore, Rexie, TransactionMode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use wasm_bindgen::JsValue;

const DB: &str = "alignlab";
const STORE: &str = "kv";

thread_local!(static DB_HANDLE: RefCell<Option<std::rc::Rc<Rexie>>> = const { RefCell::new(None) });

async fn db() -> Result<std::rc::Rc<Rexie>, String> {
    if let Some(d) = DB_HANDLE.with(|d| d.borrow().clone()) {
        return Ok(d);
    }
    let d = Rexie::builder(DB)
        .version(1)
        .add_object_store(ObjectStore::new(STORE))
        .build()
        .await
        .map_err(|e| format!("the browser refused its database (IndexedDB): {e}"))?;
    let d = std::rc::Rc::new(d);
    DB_HANDLE.with(|h| *h.borrow_mut() = Some(d.clone()));
    Ok(d)
}

/// The version of the records this page writes. Version 1 is the bare value, before envelopes.
pub const VERSION: u32 = 2;

#[derive(Serialize)]
struct Envelope<'a, T> {
    version: u32,
    data: &'a T,
}

/// `value` as the record this page writes (`{version, data}`). This and [`data`] are the only
/// code written again for each type kept: reading and writing records is not.
pub fn record<T: Serialize>(value: &T) -> Result<JsValue, String> {
    let ser = serde_wasm_bindgen::Serializer::new().serialize_maps_as_objects(true);
    Envelope { version: VERSION, data: value }.serialize(&ser).map_err(|e| e.to_string())
}

/// A record's data as a `T`.
pub fn data<T: DeserializeOwned>(data: JsValue) -> Result<T, String> {
    serde_wasm_bindgen::from_value(data).map_err(|e| e.to_string())
}

pub async fn put(key: &str, record: &JsValue) -> Result<(), String> {
    let d = db().await?;
    let tx = d.transaction(&[STORE], TransactionMode::ReadWrite).map_err(|e| e.to_string())?;
    let store = tx.store(STORE).map_err(|e| e.to_string())?;
    store.put(record, Some(&JsValue::from_str(key))).await.map_err(|e| describe(&e.to_string()))?;
    tx.done().await.map_err(|e| describe(&e.to_string()))?;
    Ok(())
}

async fn get_js(key: &str) -> Result<Option<JsValue>, String> {
    let d = db().await?;
    let tx = d.transaction(&[STORE], TransactionMode::ReadOnly).map_err(|e| e.to_string())?;
    let store = tx.store(STORE).map_err(|e| e.to_string())?;
    let v = store.get(JsValue::from_str(key)).await.map_err(|e| e.to_string())?;
    Ok(v.filter(|v| !v.is_undefined() && !v.is_null()))
}

/// Reads the record under `key`, of any version this page reads, and hands its data to `read`
/// (nothing to hand when there is none). One that `read` refuses, or from a newer version, is
/// kept aside (see the module doc) and the error says so; the caller starts from empty.
pub async fn get(key: &str, read: &dyn Fn(JsValue) -> Result<(), String>) -> Result<(), String> {
    let Some(raw) = get_js(key).await? else { return Ok(()) };
    let field = |name: &str| js_sys::Reflect::get(&raw, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED);
    // An envelope's `data` may be absent: serde_wasm_bindgen writes `None` as undefined.
    let version = if raw.is_object() && !js_sys::Array::is_array(&raw) { field("version").as_f64() } else { None };
    let read = match version {
        Some(v) if v as u32 <= VERSION => read(field("data")),
        Some(v) => Err(format!("it was saved by a newer version of the lab (record version {v})")),
        None => read(raw.clone()),
    };
    let Err(why) = read else { return Ok(()) };
    let aside = format!("unreadable:{key}:{}", js_sys::Date::now() as u64);
    put(&aside, &raw).await?;
    Err(format!(
        "the saved '{key}' could not be read ({why}). It is kept aside as '{aside}': download it \
         from the Data tab (Records the lab could not read)"
    ))
}

/// Keys of the records kept aside as unreadable.
pub async fn unreadable() -> Result<Vec<String>, String> {
    let d = db().await?;
    let tx = d.transaction(&[STORE], TransactionMode::ReadOnly).map_err(|e| e.to_string())?;
    let store = tx.store(STORE).map_err(|e| e.to_string())?;
    let keys = store.get_all_keys(None, None).await.map_err(|e| e.to_string())?;
    Ok(keys.iter().filter_map(|k| k.as_string()).filter(|k| k.starts_with("unreadable:")).collect())
}

/// A kept-aside record as JSON text, exactly as it was stored.
pub async fn raw_json(key: &str) -> Result<String, String> {
    let v = get_js(key).await?.ok_or_else(|| format!("'{key}' is gone"))?;
    js_sys::JSON::stringify(&v).map(String::from).map_err(|e| format!("{e:?}"))
}

pub async fn clear() -> Result<(), String> {
    let d = db().await?;
    let tx = d.transaction(&[STORE], TransactionMode::ReadWrite).map_err(|e| e.to_string())?;
    tx.store(STORE).map_err(|e| e.to_string())?.clear().await.map_err(|e| e.to_string())?;
    tx.done().await.map_err(|e| e.to_string())?;
    Ok(())
}

fn describe(e: &str) -> String {
    if e.contains("Quota") || e.contains("quota") {
        format!("the browser's storage is full ({e}): export your data and adapter now, then clear old runs")
    } else {
        format!("saving failed ({e}): export your data to keep it")
    }
}
