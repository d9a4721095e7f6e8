//! The kernels' C signatures, parsed from CUDA source text. The emulator's build script
//! generates its kernel table and typed wrappers from this parse, and the runtime's signature
//! check (`kernels::signature`) holds every launcher's table of kernels to it.

/// Element type behind a pointer parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    /// `float`
    F32,
    /// `double`
    F64,
    /// `int`
    I32,
    /// `unsigned char`
    U8,
    /// `unsigned long long` (device addresses in a table)
    U64,
}

/// The kind of one kernel parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// `const T*`
    In(Elem),
    /// `T*`
    Out(Elem),
    /// `int`
    I32,
    /// `float`
    F32,
}

/// One `extern "C" __global__` kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSignature {
    /// The kernel name.
    pub name: String,
    /// Its parameters, in order.
    pub params: Vec<Param>,
    /// The parameters' names in the source, in order.
    pub param_names: Vec<String>,
}

impl Param {
    /// Bytes in a kernel's parameter buffer (pointers are 64-bit device addresses).
    pub fn size(self) -> usize {
        match self {
            Param::In(_) | Param::Out(_) => 8,
            Param::I32 | Param::F32 => 4,
        }
    }

    /// The Rust type that carries this parameter across an FFI call on host memory.
    pub fn rust_type(self) -> String {
        let elem = |e: Elem| match e {
            Elem::F32 => "f32",
            Elem::F64 => "f64",
            Elem::I32 => "i32",
            Elem::U8 => "u8",
            Elem::U64 => "u64",
        };
        match self {
            Param::In(e) => format!("*const {}", elem(e)),
            Param::Out(e) => format!("*mut {}", elem(e)),
            Param::I32 => "i32".to_string(),
            Param::F32 => "f32".to_string(),
        }
    }
}

impl KernelSignature {
    /// Bytes of the kernel's parameter buffer: each parameter at its natural alignment, in
    /// order (how CUDA lays out `cuLaunchKernel`'s `CU_LAUNCH_PARAM_BUFFER_POINTER`).
    pub fn param_bytes(&self) -> usize {
        self.params
            .iter()
            .fold(0, |off, p| off.next_multiple_of(p.size()) + p.size())
    }
}

/// Removes `// ...` and `/* ... */` comments.
pub fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    loop {
        let line = rest.find("//");
        let block = rest.find("/*");
        match (line, block) {
            (Some(l), b) if b.is_none_or(|b| l < b) => {
                out.push_str(&rest[..l]);
                rest = rest[l..].find('\n').map_or("", |e| &rest[l + e..]);
            }
            (_, Some(b)) => {
                out.push_str(&rest[..b]);
                rest = rest[b + 2..]
                    .find("*/")
                    .map_or("", |e| &rest[b + 2 + e + 2..]);
            }
            _ => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

fn parse_param(text: &str) -> Result<(Param, String), String> {
    let norm = text.replace('*', " * ");
    let toks: Vec<&str> = norm
        .split_whitespace()
        .filter(|t| *t != "__restrict__")
        .collect();
    // The parameter name is the last token.
    let name = toks.last().copied().unwrap_or_default().to_string();
    let ty = &toks[..toks.len().saturating_sub(1)];
    let is_ptr = ty.contains(&"*");
    let is_const = ty.contains(&"const");
    let base: Vec<&str> = ty
        .iter()
        .copied()
        .filter(|t| *t != "*" && *t != "const")
        .collect();
    let elem = match base.join(" ").as_str() {
        "float" => Elem::F32,
        "double" => Elem::F64,
        "int" => Elem::I32,
        "unsigned char" => Elem::U8,
        "unsigned long long" => Elem::U64,
        other => return Err(format!("unsupported parameter type `{other}` in `{text}`")),
    };
    let param = match (is_ptr, is_const, elem) {
        (true, true, e) => Param::In(e),
        (true, false, e) => Param::Out(e),
        (false, _, Elem::I32) => Param::I32,
        (false, _, Elem::F32) => Param::F32,
        _ => return Err(format!("unsupported scalar parameter `{text}`")),
    };
    Ok((param, name))
}

/// Parses every `extern "C" __global__` kernel in `src`.
pub fn parse_kernels(src: &str) -> Result<Vec<KernelSignature>, String> {
    const MARK: &str = "extern \"C\" __global__";
    let src = strip_comments(src);
    let mut out = Vec::new();
    let mut rest = src.as_str();
    while let Some(pos) = rest.find(MARK) {
        rest = &rest[pos + MARK.len()..];
        let open = rest.find('(').ok_or("missing `(`")?;
        let mut head = rest[..open].trim().to_string();
        let mut after = &rest[open..];
        // `void __launch_bounds__(...) name(`: skip the bounds' parentheses.
        if let Some(before) = head.strip_suffix("__launch_bounds__") {
            let close = after.find(')').ok_or("unclosed __launch_bounds__")?;
            after = &after[close + 1..];
            let open2 = after.find('(').ok_or("missing `(`")?;
            head = format!("{} {}", before.trim(), after[..open2].trim());
            after = &after[open2..];
        }
        let name = head
            .strip_prefix("void")
            .map(str::trim)
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_alphanumeric() || c == '_'))
            .ok_or_else(|| format!("cannot parse kernel head `{head}`"))?
            .to_string();
        let close = after.find(')').ok_or("unclosed parameter list")?;
        let (params, param_names) = after[1..close]
            .split(',')
            .map(parse_param)
            .collect::<Result<(Vec<_>, Vec<_>), _>>()
            .map_err(|e| format!("{name}: {e}"))?;
        out.push(KernelSignature {
            name,
            params,
            param_names,
        });
        rest = &after[close..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_kernel_head() {
        let src = r#"
            // extern "C" __global__ void commented_out(int n)
            extern "C" __global__ void __launch_bounds__(256)
            k1(const float* __restrict__ x, float *y, int n, float beta,
               const unsigned char* img, double* acc)
            { }
            extern "C" __global__ void k2(const int* p) {}
        "#;
        let ks = parse_kernels(src).unwrap();
        assert_eq!(ks.len(), 2);
        assert_eq!(ks[0].name, "k1");
        assert_eq!(
            ks[0].params,
            vec![
                Param::In(Elem::F32),
                Param::Out(Elem::F32),
                Param::I32,
                Param::F32,
                Param::In(Elem::U8),
                Param::Out(Elem::F64)
            ]
        );
        assert_eq!(
            ks[0].param_names,
            ["x", "y", "n", "beta", "img", "acc"].map(String::from)
        );
        assert_eq!(ks[1].params, vec![Param::In(Elem::I32)]);
        assert_eq!(
            ks[0].param_bytes(),
            8 + 8 + 4 + 4 + 8 + 8,
            "pointers 8-aligned"
        );
    }
}
