//! PPO's value head on the policy's trunk.

use super::*;

/// PPO's value head V(s) = w·h + b on the policy's final hidden states (a shared trunk; TRL's
/// default is a separate value model initialised from the reward model — sharing halves the
/// compute and is what Ziegler et al.'s original code did). Initialised to zero, so the first
/// values are 0 and the first advantages are the plain discounted returns.
pub struct ValueHead {
    pub head: ScalarHead,
    pub varmap: VarMap,
}

impl ValueHead {
    pub fn zeros(hidden: usize) -> Result<Self> {
        let dev = candle_core::Device::Cpu;
        let varmap = VarMap::new();
        {
            let mut d = varmap.data().lock().expect("VarMap lock");
            d.insert("v_head.weight".into(), Var::zeros((1, hidden), DType::F32, &dev)?);
            d.insert("v_head.bias".into(), Var::zeros(1, DType::F32, &dev)?);
        }
        let head = ScalarHead::new(VarBuilder::from_varmap(&varmap, DType::F32, &dev).pp("v_head"), hidden)?;
        Ok(Self { head, varmap })
    }

    pub fn load(path: &Path, hidden: usize) -> Result<Self> {
        let v = Self::zeros(hidden)?;
        let t = load_safetensors(path, &candle_core::Device::Cpu)?;
        for (name, var) in named(Some(&v.varmap)) {
            let src = t.get(&name).ok_or_else(|| Error::invalid(path, format!("missing tensor {name}")))?;
            if src.dims() != var.dims() {
                return Err(Error::invalid(path, format!("tensor {name} has shape {:?}", src.dims())));
            }
            var.set(&src.to_dtype(DType::F32)?)?;
        }
        Ok(v)
    }

    /// `[b, c, hidden]` → `[b, c]` f32.
    pub fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.head.forward(&hidden.to_dtype(DType::F32)?)?)
    }

    pub(super) fn tensors(&self) -> Result<std::collections::HashMap<String, Tensor>> {
        named(Some(&self.varmap)).into_iter().map(|(k, v)| Ok((k, v.as_tensor().copy()?))).collect()
    }
}
