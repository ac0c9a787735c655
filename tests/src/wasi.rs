//! The few WASI preview1 calls a Rust `wasm32-wasip1` cdylib imports, implemented directly
//! (no `wasmtime-wasi`): stdout/stderr are captured per VM, clocks come from the [`Host`]'s
//! controllable clock, randomness from a seeded generator so runs are reproducible, and there
//! are no files, arguments or environment variables.
//!
//! [`Host`]: crate::Host

use wasmtime::{Linker, Result, bail};

use crate::memory::{Ctx, read, write, write_u32, write_u64};
use crate::state::VmState;

const MODULE: &str = "wasi_snapshot_preview1";
const SUCCESS: u32 = 0;
const EBADF: u32 = 8;
const EINVAL: u32 = 28;

/// Raised by `proc_exit` to unwind out of the module; a clean `_start` exit is not a crash.
#[derive(Debug)]
pub(crate) struct ProcExit(pub(crate) u32);

impl std::fmt::Display for ProcExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "proc_exit({})", self.0)
    }
}

impl std::error::Error for ProcExit {}

/// Adds the implemented WASI calls to `linker`.
pub(crate) fn add_to_linker(l: &mut Linker<VmState>) -> Result<()> {
    l.func_wrap(MODULE, "fd_write", fd_write)?;
    l.func_wrap(MODULE, "fd_read", |_c: Ctx<'_>, _fd: u32, _iovs: u32, _n: u32, _out: u32| Ok(EBADF))?;
    l.func_wrap(MODULE, "fd_close", |_c: Ctx<'_>, _fd: u32| Ok(EBADF))?;
    l.func_wrap(MODULE, "fd_seek", |_c: Ctx<'_>, _fd: u32, _off: i64, _wh: u32, _out: u32| Ok(EBADF))?;
    l.func_wrap(MODULE, "fd_sync", |_c: Ctx<'_>, _fd: u32| Ok(SUCCESS))?;
    l.func_wrap(MODULE, "fd_fdstat_get", fd_fdstat_get)?;
    l.func_wrap(MODULE, "fd_prestat_get", |_c: Ctx<'_>, _fd: u32, _out: u32| Ok(EBADF))?;
    l.func_wrap(MODULE, "fd_prestat_dir_name", |_c: Ctx<'_>, _fd: u32, _p: u32, _n: u32| Ok(EBADF))?;
    l.func_wrap(MODULE, "environ_sizes_get", zero_sizes)?;
    l.func_wrap(MODULE, "args_sizes_get", zero_sizes)?;
    l.func_wrap(MODULE, "environ_get", |_c: Ctx<'_>, _a: u32, _b: u32| Ok(SUCCESS))?;
    l.func_wrap(MODULE, "args_get", |_c: Ctx<'_>, _a: u32, _b: u32| Ok(SUCCESS))?;
    l.func_wrap(MODULE, "clock_time_get", clock_time_get)?;
    l.func_wrap(MODULE, "clock_res_get", |mut c: Ctx<'_>, _id: u32, out: u32| {
        write_u64(&mut c, out, 1).map(|()| SUCCESS)
    })?;
    l.func_wrap(MODULE, "random_get", random_get)?;
    l.func_wrap(MODULE, "sched_yield", |_c: Ctx<'_>| Ok(SUCCESS))?;
    l.func_wrap(MODULE, "proc_exit", |mut c: Ctx<'_>, code: u32| -> Result<()> {
        c.data_mut().exit_code = Some(code);
        Err(ProcExit(code).into())
    })?;
    Ok(())
}

fn fd_write(mut c: Ctx<'_>, fd: u32, iovs: u32, iovs_len: u32, nwritten: u32) -> Result<u32> {
    if fd != 1 && fd != 2 {
        return Ok(EBADF);
    }
    if iovs_len > 1024 {
        return Ok(EINVAL);
    }
    let table = read(&mut c, iovs, iovs_len * 8)?;
    let mut written = Vec::new();
    for iov in table.chunks_exact(8) {
        let ptr = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
        let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
        written.extend(read(&mut c, ptr, len)?);
    }
    let n = written.len() as u32;
    if std::env::var_os("MESHGATE_TEST_LOG").is_some() {
        eprint!("{}", String::from_utf8_lossy(&written));
    }
    let s = c.data_mut();
    if fd == 1 {
        s.stdout.extend(written);
    } else {
        s.stderr.extend(written);
    }
    write_u32(&mut c, nwritten, n)?;
    Ok(SUCCESS)
}

/// stdin/stdout/stderr are character devices; there are no other descriptors.
fn fd_fdstat_get(mut c: Ctx<'_>, fd: u32, out: u32) -> Result<u32> {
    if fd > 2 {
        return Ok(EBADF);
    }
    // fdstat: u8 filetype, u16 flags, padding, u64 rights_base, u64 rights_inheriting.
    let mut stat = [0u8; 24];
    stat[0] = 2; // character device
    stat[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    write(&mut c, out, &stat)?;
    Ok(SUCCESS)
}

fn zero_sizes(mut c: Ctx<'_>, count_out: u32, size_out: u32) -> Result<u32> {
    write_u32(&mut c, count_out, 0)?;
    write_u32(&mut c, size_out, 0)?;
    Ok(SUCCESS)
}

/// Clock 0 is the wall clock, every other clock the monotonic one.
fn clock_time_get(mut c: Ctx<'_>, id: u32, _precision: u64, out: u32) -> Result<u32> {
    let now = {
        let shared = c.data().host.lock();
        if id == 0 { shared.now_nanos } else { shared.monotonic_nanos }
    };
    write_u64(&mut c, out, now)?;
    Ok(SUCCESS)
}

/// splitmix64, seeded per VM: reproducible, and never the same stream for two VMs.
fn random_get(mut c: Ctx<'_>, ptr: u32, len: u32) -> Result<u32> {
    if len > 1 << 20 {
        bail!("random_get of {len} bytes");
    }
    let mut bytes = Vec::with_capacity(len as usize);
    let s = c.data_mut();
    while bytes.len() < len as usize {
        s.rng = s.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        bytes.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    bytes.truncate(len as usize);
    write(&mut c, ptr, &bytes)?;
    Ok(SUCCESS)
}
