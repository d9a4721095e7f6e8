pub use {data, model, tensor};
