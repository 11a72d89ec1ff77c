//! The IDX format of MNIST and Fashion-MNIST, gzip-compressed or not. A file is a magic
//! number (two zero bytes, a type byte, the number of dimensions), the dimensions as
//! big-endian u32, then the data. Only unsigned bytes (type 0x08) are used by these data
//! sets, and only they are read. Every malformation is reported with the file's path.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// One IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

fn bad(path: &Path, message: impl Into<String>) -> DataError {
    DataError::Data {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads an IDX file; gzip is recognised by its magic bytes, whatever the file is called.
pub fn read(path: &Path) -> Result<IdxArray> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| bad(path, format!("not a readable gzip file: {e}")))?;
        out
    } else {
        raw
    };
    parse(&bytes).map_err(|message| bad(path, message))
}

/// Parses IDX bytes; the error says what is wrong.
pub fn parse(bytes: &[u8]) -> std::result::Result<IdxArray, String> {
    if bytes.len() < 4 {
        return Err(format!(
            "truncated: {} bytes is too short for an IDX header",
            bytes.len()
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format!(
            "not an IDX file: wrong magic number 0x{:02x}{:02x}{:02x}{:02x} (expected 0x0000TTNN)",
            bytes[0], bytes[1], bytes[2], bytes[3]
        ));
    }
    if bytes[2] != 0x08 {
        return Err(format!(
            "IDX element type 0x{:02x} is not supported (only 0x08, unsigned bytes)",
            bytes[2]
        ));
    }
    let ndim = bytes[3] as usize;
    if ndim == 0 {
        return Err("IDX header declares zero dimensions".into());
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(format!(
            "truncated: the header of {ndim} dimensions needs {header} bytes, the file has {}",
            bytes.len()
        ));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let expected = expected.ok_or_else(|| format!("dimensions {dims:?} overflow"))?;
    let have = bytes.len() - header;
    if have < expected {
        return Err(format!(
            "truncated: dimensions {dims:?} need {expected} bytes of data, the file has {have}"
        ));
    }
    if have > expected {
        return Err(format!(
            "{} bytes of trailing data after the {expected} that dimensions {dims:?} need",
            have - expected
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Finds `name` or `name.gz` in `dir`.
pub fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    for candidate in [dir.join(name), dir.join(format!("{name}.gz"))] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(DataError::io(
        dir.join(name),
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("neither {name} nor {name}.gz is in {}", dir.display()),
        ),
    ))
}

/// Reads an images file and its labels file, checking that they agree. Returns the pixels
/// (one row per image), the image shape `[1, rows, cols]` and the labels.
pub fn read_pair(images: &Path, labels: &Path) -> Result<(Vec<u8>, Vec<usize>, Vec<u32>)> {
    let x = read(images)?;
    let y = read(labels)?;
    if x.dims.len() != 3 {
        return Err(bad(
            images,
            format!(
                "expected 3 dimensions (count, rows, columns), found {:?}",
                x.dims
            ),
        ));
    }
    if y.dims.len() != 1 {
        return Err(bad(
            labels,
            format!("expected 1 dimension (count), found {:?}", y.dims),
        ));
    }
    if x.dims[0] != y.dims[0] {
        return Err(bad(
            labels,
            format!(
                "{} labels but {} holds {} images",
                y.dims[0],
                images.display(),
                x.dims[0]
            ),
        ));
    }
    let labels_u32 = y.data.iter().map(|&l| l as u32).collect();
    Ok((x.data, vec![1, x.dims[1], x.dims[2]], labels_u32))
}

/// Writes an IDX file of unsigned bytes (used to build test data).
pub fn encode(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&(*d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn reads_plain_and_gzip() {
        let d = dir();
        let bytes = encode(&[2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        std::fs::write(d.path().join("a"), &bytes).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&bytes).unwrap();
        std::fs::write(d.path().join("b.gz"), gz.finish().unwrap()).unwrap();
        let a = read(&d.path().join("a")).unwrap();
        assert_eq!(a.dims, vec![2, 2, 3]);
        assert_eq!(a, read(&find(d.path(), "b").unwrap()).unwrap());
    }

    #[test]
    fn malformed_files_are_named_and_explained() {
        let d = dir();
        let path = d.path().join("bad");
        let mut bytes = encode(&[2, 2, 2], &[0; 8]);
        bytes[0] = 0x12;
        std::fs::write(&path, &bytes).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(
            err.contains("bad") && err.contains("wrong magic number"),
            "{err}"
        );

        let bytes = encode(&[3, 2, 2], &[0; 10]);
        std::fs::write(&path, &bytes).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(
            err.contains("truncated") && err.contains("12 bytes"),
            "{err}"
        );

        std::fs::write(&path, [0u8, 0, 8, 3, 0, 0]).unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("truncated"));

        let images = d.path().join("images");
        let labels = d.path().join("labels");
        std::fs::write(&images, encode(&[3, 2, 2], &[0; 12])).unwrap();
        std::fs::write(&labels, encode(&[2], &[0, 1])).unwrap();
        let err = read_pair(&images, &labels).unwrap_err().to_string();
        assert!(
            err.contains("2 labels") && err.contains("3 images"),
            "{err}"
        );
    }
}
