//! Shared data (key → value with a CAS version) and shared queues, backed by the [`Host`]
//! so every VM of the host sees them.
//!
//! [`Host`]: crate::Host

use wasmtime::{Linker, Result};

use super::named;
use crate::abi::Status;
use crate::memory::{Ctx, read, read_string, return_bytes, write_u32};
use crate::state::VmState;

pub(super) fn add(l: &mut Linker<VmState>) -> Result<()> {
    l.func_wrap("env", "proxy_get_shared_data", |mut c: Ctx<'_>, kp: u32, kn: u32, op: u32, os: u32, ocas: u32| {
        named("proxy_get_shared_data", get(&mut c, kp, kn, op, os, ocas))
    })?;
    l.func_wrap("env", "proxy_set_shared_data", |mut c: Ctx<'_>, kp: u32, kn: u32, vp: u32, vn: u32, cas: u32| {
        named("proxy_set_shared_data", set(&mut c, kp, kn, vp, vn, cas))
    })?;
    l.func_wrap("env", "proxy_register_shared_queue", |mut c: Ctx<'_>, np: u32, nn: u32, oid: u32| {
        named("proxy_register_shared_queue", register(&mut c, np, nn, oid))
    })?;
    l.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: Ctx<'_>, vp: u32, vn: u32, np: u32, nn: u32, oid: u32| {
            named("proxy_resolve_shared_queue", resolve(&mut c, vp, vn, np, nn, oid))
        },
    )?;
    l.func_wrap("env", "proxy_enqueue_shared_queue", |mut c: Ctx<'_>, id: u32, vp: u32, vn: u32| {
        let r = read(&mut c, vp, vn).map(|v| c.data().host.lock().enqueue(id, v));
        named("proxy_enqueue_shared_queue", r)
    })?;
    l.func_wrap("env", "proxy_dequeue_shared_queue", |mut c: Ctx<'_>, id: u32, op: u32, os: u32| {
        named("proxy_dequeue_shared_queue", dequeue(&mut c, id, op, os))
    })?;
    Ok(())
}

fn get(c: &mut Ctx<'_>, kp: u32, kn: u32, op: u32, os: u32, ocas: u32) -> Result<Status> {
    let key = read_string(c, kp, kn)?;
    let found = c.data().host.lock().get_data(&key);
    let Some((value, cas)) = found else {
        return Ok(Status::NotFound);
    };
    return_bytes(c, &value, op, os)?;
    write_u32(c, ocas, cas)?;
    Ok(Status::Ok)
}

fn set(c: &mut Ctx<'_>, kp: u32, kn: u32, vp: u32, vn: u32, cas: u32) -> Result<Status> {
    let key = read_string(c, kp, kn)?;
    let value = read(c, vp, vn)?;
    let result = c.data().host.lock().set_data(&key, &value, cas);
    Ok(match result {
        Ok(_) => Status::Ok,
        Err(status) => status,
    })
}

fn register(c: &mut Ctx<'_>, np: u32, nn: u32, oid: u32) -> Result<Status> {
    let name = read_string(c, np, nn)?;
    let s = c.data();
    let owner = (s.vm_number, s.effective_context);
    let id = s.host.lock().register_queue(&s.vm_id, &name, owner);
    write_u32(c, oid, id)?;
    Ok(Status::Ok)
}

/// An empty VM id means "my own VM", as in Envoy.
fn resolve(c: &mut Ctx<'_>, vp: u32, vn: u32, np: u32, nn: u32, oid: u32) -> Result<Status> {
    let mut vm_id = read_string(c, vp, vn)?;
    let name = read_string(c, np, nn)?;
    if vm_id.is_empty() {
        vm_id = c.data().vm_id.clone();
    }
    let found = c.data().host.lock().resolve_queue(&vm_id, &name);
    let Some(id) = found else {
        return Ok(Status::NotFound);
    };
    write_u32(c, oid, id)?;
    Ok(Status::Ok)
}

fn dequeue(c: &mut Ctx<'_>, id: u32, op: u32, os: u32) -> Result<Status> {
    let item = c.data().host.lock().dequeue(id);
    match item {
        Ok(bytes) => {
            return_bytes(c, &bytes, op, os)?;
            Ok(Status::Ok)
        }
        Err(status) => Ok(status),
    }
}
