//! Metrics: define, increment, record, get — host-wide, like Envoy's stats, so two VMs that
//! define the same name update the same metric.

use wasmtime::{Linker, Result, bail};

use super::{named, tally};
use crate::abi::{MetricType, Status};
use crate::memory::{Ctx, read_string, write_u32, write_u64};
use crate::state::VmState;

pub(super) fn add(l: &mut Linker<VmState>) -> Result<()> {
    l.func_wrap("env", "proxy_define_metric", |mut c: Ctx<'_>, kind: u32, np: u32, nn: u32, oid: u32| {
        named("proxy_define_metric", define(&mut c, kind, np, nn, oid))
    })?;
    l.func_wrap("env", "proxy_increment_metric", |c: Ctx<'_>, id: u32, offset: i64| {
        tally("proxy_increment_metric");
        Ok(increment(&c, id, offset).code())
    })?;
    l.func_wrap("env", "proxy_record_metric", |c: Ctx<'_>, id: u32, value: u64| {
        tally("proxy_record_metric");
        Ok(record(&c, id, value).code())
    })?;
    l.func_wrap("env", "proxy_get_metric", |mut c: Ctx<'_>, id: u32, out: u32| {
        named("proxy_get_metric", get(&mut c, id, out))
    })?;
    Ok(())
}

fn define(c: &mut Ctx<'_>, kind: u32, np: u32, nn: u32, oid: u32) -> Result<Status> {
    let Some(kind) = MetricType::from_raw(kind) else {
        bail!("unknown metric type {kind}");
    };
    let name = read_string(c, np, nn)?;
    let id = c.data().host.lock().define_metric(kind, &name);
    write_u32(c, oid, id)?;
    Ok(Status::Ok)
}

/// Envoy: counters only go up (a negative offset is a bad argument), gauges move both ways,
/// histograms cannot be incremented.
fn increment(c: &Ctx<'_>, id: u32, offset: i64) -> Status {
    let mut shared = c.data().host.lock();
    let Some(m) = shared.metric_mut(id) else {
        return Status::NotFound;
    };
    match m.kind {
        MetricType::Counter if offset < 0 => Status::BadArgument,
        MetricType::Counter | MetricType::Gauge => {
            m.value = m.value.saturating_add(offset);
            Status::Ok
        }
        MetricType::Histogram => Status::BadArgument,
    }
}

/// Envoy: recording on a counter adds, on a gauge sets, on a histogram records a sample.
fn record(c: &Ctx<'_>, id: u32, value: u64) -> Status {
    let mut shared = c.data().host.lock();
    let Some(m) = shared.metric_mut(id) else {
        return Status::NotFound;
    };
    let as_i64 = i64::try_from(value).unwrap_or(i64::MAX);
    match m.kind {
        MetricType::Counter => m.value = m.value.saturating_add(as_i64),
        MetricType::Gauge => m.value = as_i64,
        MetricType::Histogram => {
            m.samples.push(value);
            m.value = m.value.saturating_add(as_i64);
        }
    }
    Status::Ok
}

fn get(c: &mut Ctx<'_>, id: u32, out: u32) -> Result<Status> {
    let found = c.data().host.lock().metric_mut(id).map(|m| (m.kind, m.value));
    match found {
        None => Ok(Status::NotFound),
        Some((MetricType::Histogram, _)) => Ok(Status::BadArgument),
        Some((_, value)) => {
            write_u64(c, out, value as u64)?;
            Ok(Status::Ok)
        }
    }
}
