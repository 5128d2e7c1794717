//! Terse paths such as `PID-3`, `PID-3[2].1`, `OBX[4]-5.1.2` (segment occurrence and
//! repetition in brackets, 1-based like HL7 itself).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub segment: String,
    pub occurrence: usize,
    pub field: usize,
    pub repetition: Option<usize>,
    pub component: Option<usize>,
    pub subcomponent: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path has no field number")]
    NoField,
    #[error("segment name must be three characters")]
    BadSegment,
    #[error("path number is not a positive integer")]
    BadNumber,
}

fn number(s: &str) -> Result<usize, PathError> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(PathError::BadNumber),
    }
}

fn bracketed(s: &str) -> Result<(&str, Option<usize>), PathError> {
    match s.find('[') {
        Some(open) if s.ends_with(']') => Ok((&s[..open], Some(number(&s[open + 1..s.len() - 1])?))),
        Some(_) => Err(PathError::BadNumber),
        None => Ok((s, None)),
    }
}

impl Path {
    pub fn parse(s: &str) -> Result<Path, PathError> {
        let (seg_part, rest) = s.split_once('-').ok_or(PathError::NoField)?;
        let (segment, occurrence) = bracketed(seg_part)?;
        if segment.len() != 3 {
            return Err(PathError::BadSegment);
        }
        let mut parts = rest.split('.');
        let (field, repetition) = bracketed(parts.next().ok_or(PathError::NoField)?)?;
        let field = field.parse::<usize>().map_err(|_| PathError::BadNumber)?;
        let component = parts.next().map(number).transpose()?;
        let subcomponent = parts.next().map(number).transpose()?;
        Ok(Path {
            segment: segment.to_owned(),
            occurrence: occurrence.unwrap_or(1),
            field,
            repetition,
            component,
            subcomponent,
        })
    }
}
