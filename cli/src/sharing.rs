//! `--location`: the position given on the command line, shared with the
//! people the command deals with and nobody else.

use locus_core::location::sharing::Sharing;
use locus_core::location::Location;
use locus_core::Phone;

use crate::CliError;

/// Sets our position and shares it, exactly, with `people` (SIP URIs, or
/// user names in the account's domain).
pub fn share_with<S: AsRef<str>>(
    phone: &Phone,
    location: Location,
    people: &[S],
) -> Result<(), CliError> {
    let allowed = people
        .iter()
        .map(|p| phone.address_of(p.as_ref()).map(|a| a.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    phone.set_location(Some(location))?;
    phone.set_sharing(Sharing::with(allowed, None))?;
    Ok(())
}
