//! What the user made survives a reload: preferences, ratings, ideal answers, prompts, runs,
//! the last adapter and the settings live in IndexedDB (rexie), one record per collection.
//! A write that fails (storage full or refused) is reported; the data stays in memory.

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

fn to_js<T: Serialize>(v: &T) -> Result<JsValue, String> {
    let ser = serde_wasm_bindgen::Serializer::new().serialize_maps_as_objects(true);
    v.serialize(&ser).map_err(|e| e.to_string())
}

pub async fn put<T: Serialize>(key: &str, value: &T) -> Result<(), String> {
    let d = db().await?;
    let v = to_js(value)?;
    let tx = d.transaction(&[STORE], TransactionMode::ReadWrite).map_err(|e| e.to_string())?;
    let store = tx.store(STORE).map_err(|e| e.to_string())?;
    store.put(&v, Some(&JsValue::from_str(key))).await.map_err(|e| describe(&e.to_string()))?;
    tx.done().await.map_err(|e| describe(&e.to_string()))?;
    Ok(())
}

pub async fn get<T: DeserializeOwned>(key: &str) -> Result<Option<T>, String> {
    let d = db().await?;
    let tx = d.transaction(&[STORE], TransactionMode::ReadOnly).map_err(|e| e.to_string())?;
    let store = tx.store(STORE).map_err(|e| e.to_string())?;
    let v = store.get(JsValue::from_str(key)).await.map_err(|e| e.to_string())?;
    match v {
        Some(v) if !v.is_undefined() => serde_wasm_bindgen::from_value(v)
            .map(Some)
            .map_err(|e| format!("the saved '{key}' could not be read ({e}); it was left as it is")),
        _ => Ok(None),
    }
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
