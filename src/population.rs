//! A synthetic population for measuring patient matching: people, the sites they are seen at,
//! and the ADT messages those sites send about them, with the truth kept beside the messages.
//!
//! Four sites send the NHS number in 95%, 85%, 50% and 15% of their messages. Scenarios, each
//! given to a share of the people: twins (same surname, birth date and address, different given
//! names), namesakes (two different people with the same name and birth date), given-name and
//! surname typos at one site, a name change (marriage; later messages at some sites carry the
//! previous name as a second PID-5 repetition or in PID-9), day and month swapped at one site,
//! no NHS number anywhere, a broken check digit, a move (new address from some visit on).
//! Everything is synthetic: names from short lists, NHS numbers from the 999 test range.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

pub const SITES: [(&str, f64); 4] = [("RA1", 0.95), ("RB2", 0.85), ("RC3", 0.50), ("RD4", 0.15)];

pub const SCENARIOS: [&str; 10] = [
    "plain",
    "twins",
    "namesakes",
    "given_name_typo",
    "surname_typo",
    "name_change",
    "day_month_swap",
    "no_nhs_number",
    "broken_check_digit",
    "moved",
];

const FAMILY: &[&str] = &[
    "SMITH",
    "JONES",
    "TAYLOR",
    "BROWN",
    "WILLIAMS",
    "WILSON",
    "JOHNSON",
    "DAVIES",
    "PATEL",
    "WRIGHT",
    "KHAN",
    "EVANS",
    "THOMAS",
    "ROBERTS",
    "WALKER",
    "WHITE",
    "EDWARDS",
    "HUGHES",
    "GREEN",
    "HALL",
    "LEWIS",
    "HARRIS",
    "CLARKE",
    "JACKSON",
    "WOOD",
    "TURNER",
    "MARTIN",
    "COOPER",
    "HILL",
    "WARD",
    "MORRIS",
    "MOORE",
    "CLARK",
    "LEE",
    "KING",
    "BAKER",
    "HARRISON",
    "MORGAN",
    "ALLEN",
    "JAMES",
    "SCOTT",
    "PHILLIPS",
    "WATSON",
    "DAVIS",
    "PARKER",
    "PRICE",
    "BENNETT",
    "YOUNG",
    "GRIFFITHS",
    "MITCHELL",
    "KELLY",
    "COOK",
    "CARTER",
    "RICHARDSON",
    "BAILEY",
    "COLLINS",
    "BELL",
    "SHAW",
    "MURPHY",
    "MILLER",
    "COX",
    "RICHARDS",
    "KHAN",
    "MARSHALL",
    "ANDERSON",
    "SIMPSON",
    "ELLIS",
    "ADAMS",
    "SINGH",
    "BEGUM",
    "WILKINSON",
    "FOSTER",
    "CHAPMAN",
    "POWELL",
    "WEBB",
    "ROGERS",
    "GRAY",
    "MASON",
    "ALI",
    "HUNT",
    "HUSSAIN",
    "CAMPBELL",
    "MATTHEWS",
    "OWEN",
    "PALMER",
    "HOLMES",
    "MILLS",
    "BARNES",
    "KNIGHT",
    "LLOYD",
    "BUTLER",
    "RUSSELL",
    "BARKER",
    "FISHER",
    "STEVENS",
    "JENKINS",
    "MURRAY",
    "DIXON",
    "HARVEY",
    "GRAHAM",
    "PEARSON",
    "AHMED",
    "FLETCHER",
    "WALSH",
    "KAUR",
    "GIBSON",
    "HOWARD",
    "ANDREWS",
    "STEWART",
    "ELLIOTT",
    "REYNOLDS",
    "SAUNDERS",
    "PAYNE",
    "FOX",
    "FORD",
    "PEARCE",
    "DAY",
    "BROOKS",
    "WEST",
    "LAWRENCE",
    "COLE",
    "ATKINSON",
    "BRADLEY",
    "SPENCER",
    "GILL",
];
const FEMALE: &[&str] = &[
    "OLIVIA",
    "AMELIA",
    "ISLA",
    "AVA",
    "MIA",
    "IVY",
    "LILY",
    "ISABELLA",
    "ROSIE",
    "SOPHIA",
    "GRACE",
    "WILLOW",
    "FREYA",
    "FLORENCE",
    "EMILY",
    "ELLA",
    "POPPY",
    "EVIE",
    "ELSIE",
    "CHARLOTTE",
    "EVELYN",
    "SIENNA",
    "SOPHIE",
    "DAISY",
    "PHOEBE",
    "SARAH",
    "MARGARET",
    "SUSAN",
    "HELEN",
    "PATRICIA",
    "JENNIFER",
    "ELIZABETH",
    "LINDA",
    "BARBARA",
    "DOROTHY",
    "JEAN",
    "JOAN",
    "ANN",
    "CAROL",
    "KAREN",
    "JULIE",
    "NICOLA",
    "CLAIRE",
    "LOUISE",
    "RACHEL",
    "REBECCA",
    "LAURA",
    "HANNAH",
    "JESSICA",
    "AMY",
    "CHLOE",
    "LUCY",
    "ZARA",
    "AISHA",
    "FATIMA",
    "PRIYA",
    "MAYA",
    "NORA",
];
const MALE: &[&str] = &[
    "OLIVER",
    "GEORGE",
    "NOAH",
    "ARTHUR",
    "MUHAMMAD",
    "LEO",
    "HARRY",
    "OSCAR",
    "ARCHIE",
    "HENRY",
    "THEODORE",
    "FREDDIE",
    "JACK",
    "CHARLIE",
    "THOMAS",
    "WILLIAM",
    "JAMES",
    "ALFIE",
    "JOSHUA",
    "ISAAC",
    "EDWARD",
    "DAVID",
    "JOHN",
    "PETER",
    "MICHAEL",
    "ROBERT",
    "PAUL",
    "ANDREW",
    "RICHARD",
    "MARK",
    "STEPHEN",
    "CHRISTOPHER",
    "DANIEL",
    "MATTHEW",
    "ANTHONY",
    "KEVIN",
    "GARY",
    "IAN",
    "SIMON",
    "NEIL",
    "MARTIN",
    "ADAM",
    "BEN",
    "SAMUEL",
    "LUKE",
    "RYAN",
    "NATHAN",
    "ALI",
    "OMAR",
    "RAJ",
    "SANJAY",
    "TOM",
    "LEWIS",
    "CALLUM",
    "KIERAN",
    "ROSS",
    "DEAN",
    "CRAIG",
];
const STREETS: &[&str] = &[
    "HIGH STREET",
    "STATION ROAD",
    "MAIN STREET",
    "PARK ROAD",
    "CHURCH ROAD",
    "CHURCH STREET",
    "LONDON ROAD",
    "VICTORIA ROAD",
    "GREEN LANE",
    "MANOR ROAD",
    "CHURCH LANE",
    "PARK AVENUE",
    "THE AVENUE",
    "QUEENS ROAD",
    "NEW ROAD",
    "GRANGE ROAD",
    "KINGS ROAD",
    "ALBERT ROAD",
    "MILL LANE",
    "SCHOOL LANE",
    "NORTH STREET",
    "WEST STREET",
    "SOUTH STREET",
    "MILL ROAD",
    "CHESTER ROAD",
    "WINDSOR ROAD",
    "YORK ROAD",
];
const TOWNS: &[(&str, &str)] = &[
    ("LEEDS", "LS"),
    ("BRADFORD", "BD"),
    ("WAKEFIELD", "WF"),
    ("HARROGATE", "HG"),
    ("HALIFAX", "HX"),
    ("YORK", "YO"),
];

#[derive(Debug, Clone)]
pub struct Address {
    pub line: String,
    pub town: String,
    pub postcode: String,
}

/// One synthetic person: the truth the messages are measured against.
#[derive(Debug, Clone)]
pub struct Person {
    pub id: usize,
    pub scenario: &'static str,
    pub nhs: Option<String>,
    pub family: String,
    /// The surname before a name change.
    pub previous_family: Option<String>,
    pub given: String,
    pub dob: (u32, u32, u32),
    pub sex: &'static str,
    pub addresses: Vec<Address>,
}

/// One message and the truth about it.
#[derive(Debug, Clone)]
pub struct Message {
    pub person: usize,
    pub site: &'static str,
    pub mrn: String,
    pub text: String,
}

pub struct Population {
    pub people: Vec<Person>,
    pub messages: Vec<Message>,
}

fn nhs_number(rng: &mut StdRng, used: &mut std::collections::HashSet<String>) -> String {
    loop {
        let n = crate::generate::nhs_number(rng);
        if used.insert(n.clone()) {
            return n;
        }
    }
}

fn address(rng: &mut StdRng) -> Address {
    let (town, area) = TOWNS.choose(rng).copied().unwrap_or(("LEEDS", "LS"));
    Address {
        line: format!(
            "{} {}",
            rng.random_range(1..200),
            STREETS.choose(rng).copied().unwrap_or("HIGH STREET")
        ),
        town: town.into(),
        postcode: format!(
            "{area}{} {}{}{}",
            rng.random_range(1..30),
            rng.random_range(1..10),
            char::from(b'A' + rng.random_range(0..26u8)),
            char::from(b'A' + rng.random_range(0..26u8))
        ),
    }
}

fn person(rng: &mut StdRng, id: usize, scenario: &'static str, used: &mut std::collections::HashSet<String>) -> Person {
    let sex = if rng.random_bool(0.5) { "F" } else { "M" };
    let given = if sex == "F" { FEMALE } else { MALE }.choose(rng).copied().unwrap_or("ANN");
    Person {
        id,
        scenario,
        nhs: Some(nhs_number(rng, used)),
        family: FAMILY.choose(rng).copied().unwrap_or("SMITH").into(),
        previous_family: None,
        given: given.into(),
        dob: (rng.random_range(1930..2022), rng.random_range(1..=12), rng.random_range(1..=28)),
        sex,
        addresses: vec![address(rng)],
    }
}

/// One typing error: a letter dropped, doubled, swapped with the next, or replaced.
fn typo(rng: &mut StdRng, s: &str) -> String {
    let mut c: Vec<char> = s.chars().collect();
    if c.len() < 4 {
        c.push(c.last().copied().unwrap_or('E'));
        return c.into_iter().collect();
    }
    let i = rng.random_range(1..c.len() - 1);
    match rng.random_range(0..4) {
        0 => {
            c.remove(i);
        }
        1 => c.insert(i, c[i]),
        2 => c.swap(i, i + 1),
        _ => c[i] = char::from(b'A' + rng.random_range(0..26u8)),
    }
    c.into_iter().collect()
}

/// A valid-looking NHS number with one digit changed so its check digit fails.
fn broken(rng: &mut StdRng, nhs: &str) -> String {
    loop {
        let mut d: Vec<u8> = nhs.bytes().collect();
        let i = rng.random_range(3..9);
        d[i] = b'0' + (d[i] - b'0' + rng.random_range(1..10)) % 10;
        let s = String::from_utf8(d).unwrap_or_default();
        if !sluice_model::nhs::is_valid(&s) {
            return s;
        }
    }
}

/// `people` people (pairs for twins and namesakes) seen at the four sites, 3-4 messages each on
/// average; the same seed gives the same population.
pub fn generate(people: usize, seed: u64) -> Population {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut used = std::collections::HashSet::new();
    let mut out: Vec<Person> = Vec::new();
    while out.len() < people {
        let id = out.len();
        let r: f64 = rng.random();
        let scenario = match r {
            // shares of draws (twins and namesakes make two people each): far more twins and
            // namesakes than a real population has, to test them
            x if x < 0.015 => "twins",
            x if x < 0.03 => "namesakes",
            x if x < 0.09 => "given_name_typo",
            x if x < 0.15 => "surname_typo",
            x if x < 0.21 => "name_change",
            x if x < 0.26 => "day_month_swap",
            x if x < 0.31 => "no_nhs_number",
            x if x < 0.36 => "broken_check_digit",
            x if x < 0.46 => "moved",
            _ => "plain",
        };
        let mut p = person(&mut rng, id, scenario, &mut used);
        match scenario {
            "twins" => {
                let mut twin = person(&mut rng, id + 1, scenario, &mut used);
                twin.family = p.family.clone();
                twin.dob = p.dob;
                twin.addresses = p.addresses.clone();
                // different given names, never close to each other
                while strsim_like(&twin.given, &p.given) {
                    twin = Person {
                        given: person(&mut rng, id + 1, scenario, &mut used).given,
                        ..twin
                    };
                }
                out.push(p);
                out.push(twin);
                continue;
            }
            "namesakes" => {
                let mut other = person(&mut rng, id + 1, scenario, &mut used);
                other.family = p.family.clone();
                other.given = p.given.clone();
                other.sex = p.sex;
                other.dob = p.dob;
                out.push(p);
                out.push(other);
                continue;
            }
            "no_nhs_number" => p.nhs = None,
            "name_change" => {
                p.previous_family = Some(p.family.clone());
                p.family = FAMILY.choose(&mut rng).copied().unwrap_or("SMITH").into();
                p.sex = "F";
            }
            "day_month_swap" => p.dob.2 = rng.random_range(1..=12).max(1),
            "moved" => {
                let a = address(&mut rng);
                p.addresses.push(a);
            }
            _ => {}
        }
        out.push(p);
    }
    out.truncate(people.max(2));
    let messages = messages(&mut rng, &out);
    Population { people: out, messages }
}

/// Whether two given names are alike (the twins scenario needs clearly different ones).
fn strsim_like(a: &str, b: &str) -> bool {
    a == b || a.get(..2) == b.get(..2) || sluice_matcher::text::soundex(a) == sluice_matcher::text::soundex(b)
}

fn messages(rng: &mut StdRng, people: &[Person]) -> Vec<Message> {
    // each person's visits: 1-6, at 1-3 sites; visits are spread over time and sent in time order
    let mut visits: Vec<(u32, usize, usize)> = Vec::new();
    // the one site that gets a person's scenario wrong (typos, swapped dates, broken digits)
    let mut odd: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    for p in people {
        let mut n_sites = *[1usize, 2, 2, 3, 3, 4].choose(rng).unwrap_or(&2);
        if p.scenario != "plain" {
            n_sites = n_sites.max(2);
        }
        let mut sites: Vec<usize> = (0..4).collect();
        sites.shuffle_in_place(rng);
        sites.truncate(n_sites);
        odd.insert(p.id, sites.last().copied().unwrap_or(0));
        let n = rng.random_range(n_sites.max(2)..=6);
        for v in 0..n {
            let site = sites[v % sites.len()];
            visits.push((rng.random_range(0..1_000_000), p.id, site));
        }
    }
    visits.sort();
    // per (person, site): the visit's index there, for the scenarios that change over time
    let mut seen: std::collections::HashMap<(usize, usize), usize> = std::collections::HashMap::new();
    let mut order: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for (i, (time, pid, site)) in visits.into_iter().enumerate() {
        let Some(p) = people.get(pid) else { continue };
        let k = seen.entry((pid, site)).or_insert(0);
        let nth_here = *k;
        *k += 1;
        let nth = order.entry(pid).or_insert(0);
        let nth_overall = *nth;
        *nth += 1;
        let (code, coverage) = SITES[site];
        let mrn = format!("{code}{:06}", pid * 7 + site + 100_000);
        let mut family = p.family.clone();
        let mut given = p.given.clone();
        let mut other_name = String::new();
        let mut alias = String::new();
        let (mut y, mut m, mut d) = p.dob;
        let odd_site = odd.get(&pid) == Some(&site);
        match p.scenario {
            "given_name_typo" if odd_site => given = typo_seeded(&given, pid),
            "surname_typo" if odd_site => family = typo_seeded(&family, pid + 1),
            "day_month_swap" if odd_site => std::mem::swap(&mut m, &mut d),
            "name_change" => {
                // the change happens after the first visit; sites that knew the old name keep it
                // as a previous name (PID-5 repetition) or an alias (PID-9)
                if nth_overall == 0 {
                    family = p.previous_family.clone().unwrap_or_default();
                } else if let Some(prev) = &p.previous_family {
                    if site % 2 == 0 {
                        other_name = format!("~{prev}^{given}^^^^^M");
                    } else if site == 1 {
                        alias = format!("{prev}^{given}");
                    }
                }
            }
            _ => {}
        }
        if y == 0 {
            y = 1970;
        }
        let address = if p.scenario == "moved" && nth_overall * 2 >= 3 {
            p.addresses.last()
        } else {
            p.addresses.first()
        };
        let address = address.cloned().unwrap_or(Address {
            line: String::new(),
            town: String::new(),
            postcode: String::new(),
        });
        let nhs = match &p.nhs {
            Some(n) if rng.random_bool(coverage) => {
                if p.scenario == "broken_check_digit" && odd_site {
                    format!("~{}^^^NHS^NH", broken(rng, n))
                } else {
                    format!("~{n}^^^NHS^NH")
                }
            }
            _ => String::new(),
        };
        let trigger = match nth_here {
            0 => "A04",
            _ => ["A08", "A01", "A03"][i % 3],
        };
        let when = format!(
            "2026{:02}{:02}{:02}{:02}00",
            1 + time / 100_000,
            1 + time % 28,
            time % 24,
            time % 60
        );
        let text = format!(
            "MSH|^~\\&|PAS|{code}|SLUICE|SLUICE|{when}||ADT^{trigger}^ADT_A01|POP{i:07}|P|2.4\rEVN|{trigger}|{when}\rPID|1||{mrn}^^^{code}^MR{nhs}||{family}^{given}{other_name}||{y:04}{m:02}{d:02}|{}|{alias}||{}^^{}^^{}^GBR^H\rPV1|1|O\r",
            p.sex, address.line, address.town, address.postcode
        );
        out.push(Message {
            person: pid,
            site: code,
            mrn,
            text,
        });
    }
    out
}

fn typo_seeded(s: &str, seed: usize) -> String {
    let mut rng = StdRng::seed_from_u64(seed as u64);
    typo(&mut rng, s)
}

trait ShuffleInPlace {
    fn shuffle_in_place(&mut self, rng: &mut StdRng);
}

impl ShuffleInPlace for Vec<usize> {
    fn shuffle_in_place(&mut self, rng: &mut StdRng) {
        use rand::seq::SliceRandom;
        self.shuffle(rng);
    }
}
