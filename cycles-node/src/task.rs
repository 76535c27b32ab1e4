//! Promise forms: the core call runs on libuv's thread pool, off the JS thread, and the
//! result (or the translated error) is built back on the JS thread.

use cycles_core::CyclesError;
use napi::bindgen_prelude::{AsyncTask, ToNapiValue, TypeName};
use napi::{Env, Task};

type Work<T> = Box<dyn FnOnce() -> Result<T, CyclesError> + Send>;
type ToJs<T, J> = Box<dyn FnOnce(T) -> J + Send>;

/// One core operation run off the JS thread. Inputs are converted and validated on the JS
/// thread before the task is queued, so a bad argument rejects without touching the ledger.
pub struct Op<T, J> {
    work: Option<Work<T>>,
    to_js: Option<ToJs<T, J>>,
}

/// Queues `work`; the promise resolves with `to_js(result)` or rejects with the core error.
pub fn run<T, J>(
    work: impl FnOnce() -> Result<T, CyclesError> + Send + 'static,
    to_js: impl FnOnce(T) -> J + Send + 'static,
) -> AsyncTask<Op<T, J>>
where
    T: Send + 'static,
    J: ToNapiValue + TypeName + 'static,
{
    AsyncTask::new(Op {
        work: Some(Box::new(work)),
        to_js: Some(Box::new(to_js)),
    })
}

impl<T, J> Task for Op<T, J>
where
    T: Send + 'static,
    J: ToNapiValue + TypeName + 'static,
{
    type Output = Result<T, CyclesError>;
    type JsValue = J;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        let work = self
            .work
            .take()
            .ok_or_else(|| napi::Error::from_reason("task ran twice"))?;
        Ok(work())
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<J> {
        match output {
            Ok(v) => {
                let to_js = self
                    .to_js
                    .take()
                    .ok_or_else(|| napi::Error::from_reason("task resolved twice"))?;
                Ok(to_js(v))
            }
            Err(e) => Err(crate::error::to_js(&env, e)),
        }
    }
}
