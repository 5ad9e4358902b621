//! Synthetic card-transaction stream with labelled fraud.
//!
//! [`generate`] writes `transactions.jsonl` (one card transaction per line,
//! ordered by timestamp) and `labels.jsonl` (one chargeback label per
//! fraudulent transaction, ordered by the transaction's timestamp) into an
//! output directory. The simulation is deterministic for a seed and streams
//! day by day, so memory stays proportional to accounts + merchants + one day
//! of transactions. The behavioural model is described in
//! `docs/generator.md`.

use std::fmt;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Options for [`generate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateOptions {
    /// Number of card holders; account `c<n>` holds card `k<n>` (1-based).
    pub accounts: usize,
    /// Number of merchants `m<n>` (1-based).
    pub merchants: usize,
    /// Number of simulated days, starting at `start`.
    pub days: u32,
    /// Seed of the ChaCha8 random generator; equal seeds give equal files.
    pub seed: u64,
    /// Start of the first simulated day.
    pub start: DateTime<Utc>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            accounts: 5_000,
            merchants: 500,
            days: 30,
            seed: 42,
            start: Utc
                .with_ymd_and_hms(2018, 4, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
        }
    }
}

/// Counts of what [`generate`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenerateSummary {
    /// Lines written to `transactions.jsonl`.
    pub transactions: u64,
    /// Transactions that are fraudulent.
    pub frauds: u64,
    /// Lines written to `labels.jsonl` (equal to `frauds`).
    pub labels: u64,
}

/// Errors of [`generate`].
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// Creating the output directory or writing a file failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The directory or file that could not be written.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// An option is out of its accepted range.
    #[error("invalid option {name}={value}: {reason}")]
    InvalidOption {
        /// Name of the option (`accounts`, `merchants`, `days`).
        name: &'static str,
        /// The rejected value.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
}

/// Generates a synthetic transaction stream with fraud labels.
///
/// Creates `out_dir` if needed and writes `out_dir/transactions.jsonl` and
/// `out_dir/labels.jsonl`, replacing existing files. Returns how many
/// transactions, frauds and labels were written.
pub fn generate(opts: &GenerateOptions, out_dir: &Path) -> Result<GenerateSummary, GenerateError> {
    let stats = run(opts, out_dir)?;
    let frauds = stats.frauds.iter().sum();
    Ok(GenerateSummary {
        transactions: stats.transactions,
        frauds,
        labels: frauds,
    })
}

// ---------------------------------------------------------------------------
// Model parameters.

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;

/// Upper bounds that keep ids in `u32` and dates in range.
const MAX_ACCOUNTS: usize = 50_000_000;
const MAX_MERCHANTS: usize = 10_000_000;
const MAX_DAYS: u32 = 3_650;

/// Relative activity per local hour of day (fewer transactions at night).
const HOUR_WEIGHTS: [f64; 24] = [
    0.25, 0.15, 0.10, 0.08, 0.08, 0.12, 0.30, 0.60, 0.90, 1.00, 1.10, 1.30, 1.50, 1.30, 1.10, 1.10,
    1.20, 1.40, 1.50, 1.40, 1.20, 0.90, 0.60, 0.40,
];

/// Activity per weekday, Sunday first.
const WEEKDAY_FACTOR: [f64; 7] = [0.85, 0.95, 0.95, 1.0, 1.0, 1.1, 1.15];

/// Median genuine amount of an average account, in EUR.
const MEDIAN_SPEND: f64 = 25.0;
/// Spread of the per-account median spend (log scale).
const ACCOUNT_SPEND_SIGMA: f64 = 0.5;
/// Spread of one account's amounts around its median (log scale).
const TX_SIGMA: f64 = 0.7;

/// Share of genuine transactions at one of the account's usual merchants.
const PREFERRED_SHARE: f64 = 0.88;
/// Daily probability that an account starts a trip abroad.
const TRIP_START: f64 = 1.0 / 200.0;
/// Daily probability that an account replaces its phone (new device id).
const DEVICE_CHANGE: f64 = 1.0 / 400.0;

/// Daily probabilities, per account, of starting a fraud episode.
const P_CARD_TESTING: f64 = 1.5e-4;
const P_TAKEOVER: f64 = 1.2e-4;
const P_STOLEN_CARD: f64 = 3.0e-4;
/// Days an account is left alone after a fraud episode (card reissued).
const QUIET_AFTER_FRAUD: i64 = 60 * DAY;
/// Expected number of compromised merchants at any time per merchant.
const COMPROMISED_PER_MERCHANT: f64 = 1.0 / 350.0;
/// Mean length of a merchant compromise in days (uniform 14..=28).
const COMPROMISE_MEAN_DAYS: f64 = 21.0;

/// Chargeback delay: lognormal with this median (days), clamped.
const LABEL_MEDIAN_DAYS: f64 = 10.0;
const LABEL_SIGMA: f64 = 0.6;
const LABEL_MIN_DAYS: f64 = 2.0;
const LABEL_MAX_DAYS: f64 = 42.0;

/// A merchant category: code, share of merchants, amount factor relative to
/// the account's median, channel mix (pos, ecom, atm).
struct MccSpec {
    code: &'static str,
    weight: f64,
    amount: f64,
    mix: [f64; 3],
    /// Typical target of card testing (cheap digital goods, donations).
    testing: bool,
    /// Resellable goods that fraudsters cash out on.
    big: bool,
    /// Card-present terminal typical for skimming.
    skimmable: bool,
}

const fn mcc(
    code: &'static str,
    weight: f64,
    amount: f64,
    mix: [f64; 3],
    flags: (bool, bool, bool),
) -> MccSpec {
    MccSpec {
        code,
        weight,
        amount,
        mix,
        testing: flags.0,
        big: flags.1,
        skimmable: flags.2,
    }
}

const NONE: (bool, bool, bool) = (false, false, false);
const TESTING: (bool, bool, bool) = (true, false, false);
const BIG: (bool, bool, bool) = (false, true, false);
const SKIM: (bool, bool, bool) = (false, false, true);

#[rustfmt::skip]
const MCCS: &[MccSpec] = &[
    mcc("5411", 0.20, 1.0, [0.93, 0.07, 0.0], SKIM), // grocery
    mcc("5812", 0.14, 1.1, [1.0, 0.0, 0.0], SKIM),   // restaurants
    mcc("5814", 0.09, 0.35, [0.95, 0.05, 0.0], NONE), // fast food
    mcc("5541", 0.07, 1.2, [1.0, 0.0, 0.0], SKIM),   // fuel
    mcc("5912", 0.05, 0.6, [0.95, 0.05, 0.0], NONE), // pharmacy
    mcc("5311", 0.05, 1.6, [0.8, 0.2, 0.0], BIG),    // department store
    mcc("5691", 0.08, 1.5, [0.6, 0.4, 0.0], BIG),    // clothing
    mcc("5732", 0.04, 3.0, [0.45, 0.55, 0.0], BIG),  // electronics
    mcc("5942", 0.03, 0.6, [0.4, 0.6, 0.0], TESTING), // books
    mcc("5999", 0.06, 0.9, [0.2, 0.8, 0.0], BIG),    // marketplace
    mcc("5816", 0.04, 0.25, [0.0, 1.0, 0.0], TESTING), // digital goods
    mcc("4121", 0.04, 0.5, [0.3, 0.7, 0.0], NONE),   // taxi
    mcc("4511", 0.02, 5.0, [0.0, 1.0, 0.0], BIG),    // airline
    mcc("7011", 0.03, 4.0, [0.6, 0.4, 0.0], NONE),   // hotel
    mcc("4814", 0.02, 1.0, [0.0, 1.0, 0.0], TESTING), // telecom top-up
    mcc("6011", 0.04, 2.0, [0.0, 0.0, 1.0], SKIM),   // ATM
];

/// A country: code, share of card holders and merchants, share of trips,
/// share as origin of foreign fraud, UTC offset, cities (lat, lon, weight).
struct CountrySpec {
    code: &'static str,
    home: f64,
    travel: f64,
    risky: f64,
    utc_offset: i64,
    cities: &'static [(f64, f64, f64)],
}

const fn country(
    code: &'static str,
    home: f64,
    travel: f64,
    risky: f64,
    utc_offset: i64,
    cities: &'static [(f64, f64, f64)],
) -> CountrySpec {
    CountrySpec {
        code,
        home,
        travel,
        risky,
        utc_offset,
        cities,
    }
}

#[rustfmt::skip]
const COUNTRIES: &[CountrySpec] = &[
    country("FR", 30.0, 15.0, 0.0, 1, &[(48.8566, 2.3522, 5.0), (45.7640, 4.8357, 1.5), (43.2965, 5.3698, 1.5), (43.6047, 1.4442, 1.0), (50.6292, 3.0573, 1.0)]),
    country("DE", 18.0, 8.0, 0.0, 1, &[(52.5200, 13.4050, 3.0), (48.1351, 11.5820, 2.0), (53.5511, 9.9937, 1.5), (50.9375, 6.9603, 1.0)]),
    country("ES", 12.0, 20.0, 0.0, 1, &[(40.4168, -3.7038, 3.0), (41.3874, 2.1686, 2.5), (39.4699, -0.3763, 1.0)]),
    country("IT", 12.0, 18.0, 0.0, 1, &[(41.9028, 12.4964, 2.5), (45.4642, 9.1900, 2.5), (40.8518, 14.2681, 1.0)]),
    country("NL", 7.0, 5.0, 0.0, 1, &[(52.3676, 4.9041, 2.0), (51.9244, 4.4777, 1.0)]),
    country("BE", 6.0, 4.0, 0.0, 1, &[(50.8503, 4.3517, 2.0), (51.2194, 4.4025, 1.0)]),
    country("GB", 8.0, 10.0, 0.0, 0, &[(51.5074, -0.1278, 3.0), (53.4808, -2.2426, 1.0)]),
    country("PT", 4.0, 10.0, 0.0, 0, &[(38.7223, -9.1393, 2.0), (41.1579, -8.6291, 1.0)]),
    country("US", 3.0, 10.0, 1.0, -5, &[(40.7128, -74.0060, 2.0), (25.7617, -80.1918, 1.0)]),
    country("RO", 0.0, 0.0, 3.0, 2, &[(44.4268, 26.1025, 1.0)]),
    country("UA", 0.0, 0.0, 2.0, 2, &[(50.4501, 30.5234, 1.0)]),
    country("NG", 0.0, 0.0, 2.0, 1, &[(6.5244, 3.3792, 1.0)]),
    country("BR", 0.0, 0.0, 2.0, -3, &[(-23.5505, -46.6333, 1.0)]),
];

// ---------------------------------------------------------------------------
// Sampling helpers (no external distribution crate).

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    // Box-Muller; 1 - u lies in (0, 1] so the logarithm is finite.
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn lognormal(rng: &mut ChaCha8Rng, mu: f64, sigma: f64) -> f64 {
    (mu + sigma * normal(rng)).exp()
}

fn exponential(rng: &mut ChaCha8Rng, mean: f64) -> f64 {
    -(1.0 - rng.gen::<f64>()).ln() * mean
}

fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> u32 {
    if lambda <= 0.0 {
        return 0;
    }
    if lambda > 30.0 {
        let x = lambda + lambda.sqrt() * normal(rng);
        return x.round().max(0.0) as u32;
    }
    // Knuth's multiplication method.
    let limit = (-lambda).exp();
    let mut k = 0;
    let mut p: f64 = rng.gen();
    while p > limit {
        k += 1;
        p *= rng.gen::<f64>();
    }
    k
}

fn uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.gen::<f64>()
}

/// Index drawn from a cumulative weight table (empty table gives 0).
fn pick_cdf(rng: &mut ChaCha8Rng, cdf: &[f64]) -> usize {
    let total = cdf.last().copied().unwrap_or(0.0);
    let x = rng.gen::<f64>() * total;
    cdf.partition_point(|&c| c <= x)
        .min(cdf.len().saturating_sub(1))
}

fn cumulative(weights: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    weights
        .into_iter()
        .map(|w| {
            acc += w.max(0.0);
            acc
        })
        .collect()
}

/// A weighted set of ids.
#[derive(Default)]
struct Pool {
    ids: Vec<u32>,
    cdf: Vec<f64>,
}

impl Pool {
    fn push(&mut self, id: u32, weight: f64) {
        let last = self.cdf.last().copied().unwrap_or(0.0);
        self.ids.push(id);
        self.cdf.push(last + weight.max(1e-9));
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> Option<u32> {
        if self.ids.is_empty() {
            return None;
        }
        self.ids.get(pick_cdf(rng, &self.cdf)).copied()
    }
}

// ---------------------------------------------------------------------------
// The world: merchants, places, and the pools to draw them from.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Channel {
    Pos,
    Ecom,
    Atm,
}

impl Channel {
    fn as_str(self) -> &'static str {
        match self {
            Channel::Pos => "pos",
            Channel::Ecom => "ecom",
            Channel::Atm => "atm",
        }
    }
}

struct Merchant {
    mcc: usize,
    lat: f64,
    lon: f64,
    country: u8,
    city: u16,
}

struct City {
    country: u8,
    lat: f64,
    lon: f64,
}

struct World {
    merchants: Vec<Merchant>,
    cities: Vec<City>,
    /// Cities of each country, weighted by size.
    country_cities: Vec<Pool>,
    home_countries: Pool,
    travel_countries: Pool,
    risky_countries: Pool,
    /// Card-present merchants per city and per country, by popularity.
    city_cp: Vec<Pool>,
    country_cp: Vec<Pool>,
    ecom: Pool,
    testing: Pool,
    big: Pool,
    skimmable: Pool,
    all: Pool,
    hour_cdf: Vec<f64>,
}

impl World {
    fn build(rng: &mut ChaCha8Rng, merchants: usize) -> World {
        let mut cities = Vec::new();
        let mut country_cities: Vec<Pool> = Vec::new();
        let mut home_countries = Pool::default();
        let mut travel_countries = Pool::default();
        let mut risky_countries = Pool::default();
        for (ci, c) in COUNTRIES.iter().enumerate() {
            let mut pool = Pool::default();
            for &(lat, lon, w) in c.cities {
                pool.push(cities.len() as u32, w);
                cities.push(City {
                    country: ci as u8,
                    lat,
                    lon,
                });
            }
            country_cities.push(pool);
            if c.home > 0.0 {
                home_countries.push(ci as u32, c.home);
            }
            if c.travel > 0.0 {
                travel_countries.push(ci as u32, c.travel);
            }
            if c.risky > 0.0 {
                risky_countries.push(ci as u32, c.risky);
            }
        }

        let mcc_cdf = cumulative(MCCS.iter().map(|m| m.weight));
        let mut world = World {
            merchants: Vec::with_capacity(merchants),
            city_cp: (0..cities.len()).map(|_| Pool::default()).collect(),
            country_cp: (0..COUNTRIES.len()).map(|_| Pool::default()).collect(),
            cities,
            country_cities,
            home_countries,
            travel_countries,
            risky_countries,
            ecom: Pool::default(),
            testing: Pool::default(),
            big: Pool::default(),
            skimmable: Pool::default(),
            all: Pool::default(),
            hour_cdf: cumulative(HOUR_WEIGHTS),
        };
        for id in 0..merchants {
            let id = id as u32;
            let mcc = pick_cdf(rng, &mcc_cdf);
            let country = world.home_countries.sample(rng).unwrap_or(0) as usize;
            let city = world.country_cities[country].sample(rng).unwrap_or(0) as usize;
            let popularity = lognormal(rng, 0.0, 0.8);
            let spec = &MCCS[mcc];
            let (lat, lon) = (
                world.cities[city].lat + 0.04 * normal(rng),
                world.cities[city].lon + 0.06 * normal(rng),
            );
            let cp = spec.mix[0] + spec.mix[2];
            if cp >= 0.3 {
                world.city_cp[city].push(id, popularity);
                world.country_cp[country].push(id, popularity);
            }
            if spec.mix[1] >= 0.5 {
                world.ecom.push(id, popularity);
            }
            if spec.mix[1] > 0.0 && spec.testing {
                world.testing.push(id, popularity);
            }
            if spec.mix[1] > 0.0 && spec.big {
                world.big.push(id, popularity);
            }
            if spec.skimmable {
                world.skimmable.push(id, 1.0);
            }
            world.all.push(id, popularity);
            world.merchants.push(Merchant {
                mcc,
                lat,
                lon,
                country: country as u8,
                city: city as u16,
            });
        }
        world
    }

    /// First merchant drawn from the first non-empty pool.
    fn pick(&self, rng: &mut ChaCha8Rng, pools: &[&Pool]) -> u32 {
        pools
            .iter()
            .chain(std::iter::once(&&self.all))
            .find_map(|p| p.sample(rng))
            .unwrap_or(0)
    }

    /// Like [`World::pick`] but tries to avoid the ids in `avoid`.
    fn pick_avoiding(&self, rng: &mut ChaCha8Rng, pools: &[&Pool], avoid: &[u32]) -> u32 {
        let mut m = self.pick(rng, pools);
        for _ in 0..6 {
            if !avoid.contains(&m) {
                break;
            }
            m = self.pick(rng, pools);
        }
        m
    }

    fn spec(&self, merchant: u32) -> &MccSpec {
        let mcc = self
            .merchants
            .get(merchant as usize)
            .map(|m| m.mcc)
            .unwrap_or(0);
        &MCCS[mcc.min(MCCS.len() - 1)]
    }

    fn channel(&self, rng: &mut ChaCha8Rng, merchant: u32) -> Channel {
        let [pos, ecom, atm] = self.spec(merchant).mix;
        let x = rng.gen::<f64>() * (pos + ecom + atm);
        if x < pos {
            Channel::Pos
        } else if x < pos + ecom {
            Channel::Ecom
        } else {
            Channel::Atm
        }
    }

    /// A card-present channel if the merchant has one.
    fn cp_channel(&self, rng: &mut ChaCha8Rng, merchant: u32) -> Channel {
        let [pos, _, atm] = self.spec(merchant).mix;
        if pos + atm <= 0.0 {
            Channel::Ecom
        } else if rng.gen::<f64>() * (pos + atm) < pos {
            Channel::Pos
        } else {
            Channel::Atm
        }
    }

    /// A genuine-looking amount in cents for an account with median `exp(mu)`.
    fn amount(&self, rng: &mut ChaCha8Rng, merchant: u32, mu: f64, sigma: f64, mult: f64) -> i64 {
        let spec = self.spec(merchant);
        let eur = lognormal(rng, mu + spec.amount.ln(), sigma) * mult;
        if spec.mix[2] > 0.0 {
            // ATM withdrawals are round amounts.
            ((eur / 10.0).round().max(2.0) * 1_000.0) as i64
        } else {
            ((eur * 100.0).round() as i64).clamp(30, 2_000_000)
        }
    }

    /// Location of a merchant's terminal.
    fn merchant_place(&self, merchant: u32) -> (u8, f64, f64) {
        self.merchants
            .get(merchant as usize)
            .map(|m| (m.country, m.lat, m.lon))
            .unwrap_or((0, 0.0, 0.0))
    }

    /// Geolocated IP address somewhere in a city.
    fn ip_place(&self, rng: &mut ChaCha8Rng, city: u16) -> (u8, f64, f64) {
        match self.cities.get(city as usize) {
            Some(c) => (
                c.country,
                c.lat + 0.08 * normal(rng),
                c.lon + 0.12 * normal(rng),
            ),
            None => (0, 0.0, 0.0),
        }
    }

    fn random_city(&self, rng: &mut ChaCha8Rng, country: u8) -> u16 {
        self.country_cities
            .get(country as usize)
            .and_then(|p| p.sample(rng))
            .unwrap_or(0) as u16
    }

    /// Where a fraudster connects from: the victim's country, another
    /// European country, or a high-risk origin.
    fn attacker_city(&self, rng: &mut ChaCha8Rng, home: u8, foreign: f64) -> u16 {
        let mut country = home;
        if rng.gen::<f64>() < foreign {
            let pool = if rng.gen::<f64>() < 0.4 {
                &self.risky_countries
            } else {
                &self.home_countries
            };
            for _ in 0..6 {
                country = pool.sample(rng).unwrap_or(0) as u8;
                if country != home {
                    break;
                }
            }
        }
        self.random_city(rng, country)
    }
}

// ---------------------------------------------------------------------------
// Accounts and the day-by-day simulation.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pattern {
    CardTesting = 0,
    AccountTakeover = 1,
    CompromisedMerchant = 2,
    StolenCard = 3,
}

#[derive(Clone, Copy)]
struct Trip {
    city: u16,
    last_day: u32,
}

#[derive(Clone, Copy)]
struct Spree {
    last_day: u32,
    device: u64,
}

struct Account {
    country: u8,
    city: u16,
    /// Median amount is `exp(mu)`.
    mu: f64,
    /// Mean transactions per day.
    rate: f64,
    /// Offset of the account's local clock from UTC, in hours.
    utc_offset: i64,
    device: u64,
    second_device: Option<u64>,
    preferred: Vec<u32>,
    preferred_cdf: Vec<f64>,
    trip: Option<Trip>,
    spree: Option<Spree>,
    /// No new fraud episode before this time.
    quiet_until: i64,
}

struct Fraud {
    pattern: Pattern,
    /// Seconds from the transaction to its chargeback report.
    delay: i64,
}

struct Event {
    ts: i64,
    seq: u64,
    account: u32,
    merchant: u32,
    cents: i64,
    channel: Channel,
    device: u64,
    country: u8,
    lat: f64,
    lon: f64,
    fraud: Option<Fraud>,
}

struct Compromise {
    merchant: u32,
    share: f64,
    last_day: u32,
}

/// What one run produced, per fraud pattern.
#[derive(Debug, Default, Clone)]
struct Stats {
    transactions: u64,
    frauds: [u64; 4],
    episodes: [u64; 4],
}

/// Mutable simulation state shared by all accounts.
struct Ctx {
    rng: ChaCha8Rng,
    next_device: u64,
    next_seq: u64,
    today: Vec<Event>,
    carry: Vec<Event>,
    day: u32,
    day_start: i64,
    day_end: i64,
    weekday: f64,
    episodes: [u64; 4],
}

impl Ctx {
    fn new_device(&mut self) -> u64 {
        self.next_device += 1;
        self.next_device
    }

    fn push(&mut self, mut e: Event) {
        e.seq = self.next_seq;
        self.next_seq += 1;
        if e.ts < self.day_end {
            self.today.push(e);
        } else {
            self.carry.push(e);
        }
    }

    fn fraud(&mut self, pattern: Pattern) -> Option<Fraud> {
        let days = lognormal(&mut self.rng, LABEL_MEDIAN_DAYS.ln(), LABEL_SIGMA)
            .clamp(LABEL_MIN_DAYS, LABEL_MAX_DAYS);
        Some(Fraud {
            pattern,
            delay: (days * DAY as f64) as i64,
        })
    }

    /// A time today following the daily rhythm in a local time zone.
    fn rhythm_ts(&mut self, hour_cdf: &[f64], utc_offset: i64) -> i64 {
        let hour = pick_cdf(&mut self.rng, hour_cdf) as i64;
        let local = hour * HOUR + self.rng.gen_range(0..HOUR);
        let utc = (local - utc_offset * HOUR).rem_euclid(DAY);
        self.day_start + (utc - self.day_start.rem_euclid(DAY)).rem_euclid(DAY)
    }

    fn uniform_ts(&mut self) -> i64 {
        self.day_start + self.rng.gen_range(0..DAY)
    }
}

fn build_account(world: &World, ctx: &mut Ctx) -> Account {
    let rng = &mut ctx.rng;
    let country = world.home_countries.sample(rng).unwrap_or(0) as u8;
    let city = world.random_city(rng, country);
    let mu = MEDIAN_SPEND.ln() + ACCOUNT_SPEND_SIGMA * normal(rng);
    let rate = lognormal(rng, 0.0, 0.6).clamp(0.5, 6.0);
    let shift = (1.2 * normal(rng)).round().clamp(-3.0, 3.0) as i64;
    let utc_offset = COUNTRIES
        .get(country as usize)
        .map(|c| c.utc_offset)
        .unwrap_or(0)
        + shift;
    let n_preferred = rng.gen_range(4..=14);
    let mut preferred: Vec<u32> = Vec::with_capacity(n_preferred);
    for _ in 0..n_preferred {
        let r: f64 = rng.gen();
        let pools: &[&Pool] = if r < 0.6 {
            &[
                &world.city_cp[city as usize],
                &world.country_cp[country as usize],
            ]
        } else if r < 0.8 {
            &[&world.country_cp[country as usize]]
        } else {
            &[&world.ecom]
        };
        let m = world.pick_avoiding(rng, pools, &preferred);
        if !preferred.contains(&m) {
            preferred.push(m);
        }
    }
    let preferred_cdf = cumulative((0..preferred.len()).map(|k| 1.0 / (k as f64 + 1.0).powf(0.9)));
    let has_second = ctx.rng.gen::<f64>() < 0.4;
    let device = ctx.new_device();
    let second_device = if has_second {
        Some(ctx.new_device())
    } else {
        None
    };
    Account {
        country,
        city,
        mu,
        rate,
        utc_offset,
        device,
        second_device,
        preferred,
        preferred_cdf,
        trip: None,
        spree: None,
        quiet_until: i64::MIN,
    }
}

/// Mean of the account's genuine amounts (lognormal mean).
fn typical_amount(acc: &Account) -> f64 {
    (acc.mu + TX_SIGMA * TX_SIGMA / 2.0).exp()
}

fn genuine_tx(idx: u32, acc: &Account, world: &World, ctx: &mut Ctx) {
    let ts = ctx.rhythm_ts(&world.hour_cdf, acc.utc_offset);
    let rng = &mut ctx.rng;
    let (merchant, channel, place) = if let Some(trip) = acc.trip {
        let country = world
            .cities
            .get(trip.city as usize)
            .map_or(0, |c| c.country);
        if rng.gen::<f64>() < 0.75 {
            let m = world.pick(
                rng,
                &[
                    &world.city_cp[trip.city as usize],
                    &world.country_cp[country as usize],
                ],
            );
            (m, world.cp_channel(rng, m), world.merchant_place(m))
        } else {
            let m = world.pick(rng, &[&world.ecom]);
            (m, Channel::Ecom, world.ip_place(rng, trip.city))
        }
    } else {
        let m = if rng.gen::<f64>() < PREFERRED_SHARE && !acc.preferred.is_empty() {
            let k = pick_cdf(rng, &acc.preferred_cdf);
            acc.preferred.get(k).copied().unwrap_or(0)
        } else {
            let r: f64 = rng.gen();
            let pools: &[&Pool] = if r < 0.6 {
                &[&world.city_cp[acc.city as usize]]
            } else if r < 0.85 {
                &[&world.country_cp[acc.country as usize]]
            } else {
                &[&world.ecom]
            };
            world.pick(rng, pools)
        };
        let channel = world.channel(rng, m);
        let place = if channel == Channel::Ecom {
            world.ip_place(rng, acc.city)
        } else {
            world.merchant_place(m)
        };
        (m, channel, place)
    };
    let device = match acc.second_device {
        Some(d) if channel == Channel::Ecom && rng.gen::<f64>() < 0.3 => d,
        _ => acc.device,
    };
    let cents = world.amount(rng, merchant, acc.mu, TX_SIGMA, 1.0);
    ctx.push(Event {
        ts,
        seq: 0,
        account: idx,
        merchant,
        cents,
        channel,
        device,
        country: place.0,
        lat: place.1,
        lon: place.2,
        fraud: None,
    });
}

/// Pattern 1: a bot tests a compromised card with tiny amounts at several
/// (mostly online) merchants within minutes, then cashes out.
fn card_testing(idx: u32, acc: &mut Account, world: &World, ctx: &mut Ctx) {
    ctx.episodes[Pattern::CardTesting as usize] += 1;
    let device = ctx.new_device();
    let attacker = world.attacker_city(&mut ctx.rng, acc.country, 0.6);
    let mut ts = ctx.uniform_ts();
    let tests = ctx.rng.gen_range(3..=10);
    let mut used = Vec::with_capacity(tests + 3);
    for k in 0..tests {
        if k > 0 {
            ts += 10 + exponential(&mut ctx.rng, 60.0) as i64;
        }
        let rng = &mut ctx.rng;
        let (merchant, channel, place, dev) = if rng.gen::<f64>() < 0.85 {
            let m = world.pick_avoiding(rng, &[&world.testing, &world.ecom], &used);
            (m, Channel::Ecom, world.ip_place(rng, attacker), device)
        } else {
            let pools = [&world.country_cp[acc.country as usize]];
            let m = world.pick_avoiding(rng, &pools, &used);
            (
                m,
                world.cp_channel(rng, m),
                world.merchant_place(m),
                acc.device,
            )
        };
        used.push(merchant);
        let cents = rng.gen_range(50..=500);
        let fraud = ctx.fraud(Pattern::CardTesting);
        ctx.push(Event {
            ts,
            seq: 0,
            account: idx,
            merchant,
            cents,
            channel,
            device: dev,
            country: place.0,
            lat: place.1,
            lon: place.2,
            fraud,
        });
    }
    ts += 300 + exponential(&mut ctx.rng, 900.0) as i64;
    let big = ctx.rng.gen_range(1..=3);
    for k in 0..big {
        if k > 0 {
            ts += 60 + exponential(&mut ctx.rng, 600.0) as i64;
        }
        let rng = &mut ctx.rng;
        let merchant = world.pick_avoiding(rng, &[&world.big, &world.ecom], &used);
        used.push(merchant);
        let cents = (lognormal(rng, 350f64.ln(), 0.6).clamp(120.0, 3_000.0) * 100.0).round() as i64;
        let place = world.ip_place(rng, attacker);
        let fraud = ctx.fraud(Pattern::CardTesting);
        ctx.push(Event {
            ts,
            seq: 0,
            account: idx,
            merchant,
            cents,
            channel: Channel::Ecom,
            device,
            country: place.0,
            lat: place.1,
            lon: place.2,
            fraud,
        });
    }
    acc.quiet_until = ts + QUIET_AFTER_FRAUD;
}

/// Pattern 2: credentials are phished; from a new device, often abroad, the
/// fraudster places several large online orders over a few hours.
fn account_takeover(idx: u32, acc: &mut Account, world: &World, ctx: &mut Ctx) {
    ctx.episodes[Pattern::AccountTakeover as usize] += 1;
    let device = ctx.new_device();
    let attacker = world.attacker_city(&mut ctx.rng, acc.country, 0.6);
    let start = ctx.uniform_ts();
    let span = ctx.rng.gen_range(HOUR..=6 * HOUR);
    let n = ctx.rng.gen_range(3..=8);
    let mut times: Vec<i64> = (0..n).map(|_| start + ctx.rng.gen_range(0..span)).collect();
    times.sort_unstable();
    let typical = typical_amount(acc);
    let mut used = Vec::with_capacity(n);
    let mut last = start;
    for ts in times {
        let rng = &mut ctx.rng;
        let pools: &[&Pool] = if rng.gen::<f64>() < 0.6 {
            &[&world.big, &world.ecom]
        } else {
            &[&world.ecom]
        };
        let merchant = world.pick_avoiding(rng, pools, &used);
        used.push(merchant);
        let eur = typical * uniform(rng, 3.0, 10.0) * lognormal(rng, 0.0, 0.15);
        let cents = ((eur * 100.0).round() as i64).max(100);
        let place = world.ip_place(rng, attacker);
        let fraud = ctx.fraud(Pattern::AccountTakeover);
        ctx.push(Event {
            ts,
            seq: 0,
            account: idx,
            merchant,
            cents,
            channel: Channel::Ecom,
            device,
            country: place.0,
            lat: place.1,
            lon: place.2,
            fraud,
        });
        last = ts;
    }
    acc.quiet_until = last + QUIET_AFTER_FRAUD;
}

/// Pattern 4, one day of it: a stolen card is spent at merchants the holder
/// does not use, at three to six times the usual amounts.
fn stolen_card_day(
    idx: u32,
    acc: &Account,
    spree: Spree,
    first: bool,
    world: &World,
    ctx: &mut Ctx,
) {
    let mut n = poisson(&mut ctx.rng, 0.5 * acc.rate * ctx.weekday);
    if first {
        n = n.max(1);
    }
    for _ in 0..n {
        let ts = ctx.rhythm_ts(&world.hour_cdf, acc.utc_offset);
        let rng = &mut ctx.rng;
        let (merchant, channel, place, device) = if rng.gen::<f64>() < 0.7 {
            let pools = [
                &world.city_cp[acc.city as usize],
                &world.country_cp[acc.country as usize],
            ];
            let pools = if rng.gen::<f64>() < 0.6 {
                &pools[..]
            } else {
                &pools[1..]
            };
            let m = world.pick_avoiding(rng, pools, &acc.preferred);
            (
                m,
                world.cp_channel(rng, m),
                world.merchant_place(m),
                acc.device,
            )
        } else {
            let m = world.pick_avoiding(rng, &[&world.big, &world.ecom], &acc.preferred);
            let city = world.random_city(rng, acc.country);
            (m, Channel::Ecom, world.ip_place(rng, city), spree.device)
        };
        let mult = uniform(rng, 3.0, 6.0);
        let cents = world.amount(rng, merchant, acc.mu, 0.5, mult);
        let fraud = ctx.fraud(Pattern::StolenCard);
        ctx.push(Event {
            ts,
            seq: 0,
            account: idx,
            merchant,
            cents,
            channel,
            device,
            country: place.0,
            lat: place.1,
            lon: place.2,
            fraud,
        });
    }
}

/// One day of one account: travel, device change, genuine transactions,
/// and fraud episodes.
fn simulate_account(idx: u32, acc: &mut Account, world: &World, ctx: &mut Ctx) {
    let day = ctx.day;
    if acc.trip.is_some_and(|t| t.last_day < day) {
        acc.trip = None;
    }
    if acc.trip.is_none() && ctx.rng.gen::<f64>() < TRIP_START {
        let mut country = acc.country;
        for _ in 0..6 {
            country = world.travel_countries.sample(&mut ctx.rng).unwrap_or(0) as u8;
            if country != acc.country {
                break;
            }
        }
        if country != acc.country {
            let city = world.random_city(&mut ctx.rng, country);
            let len = ctx.rng.gen_range(2..=10);
            acc.trip = Some(Trip {
                city,
                last_day: day + len - 1,
            });
        }
    }
    if ctx.rng.gen::<f64>() < DEVICE_CHANGE {
        acc.device = ctx.new_device();
    }

    let n = poisson(&mut ctx.rng, acc.rate * ctx.weekday);
    for _ in 0..n {
        genuine_tx(idx, acc, world, ctx);
    }

    if let Some(spree) = acc.spree {
        if spree.last_day < day {
            acc.spree = None;
        } else {
            stolen_card_day(idx, acc, spree, false, world, ctx);
            if spree.last_day == day {
                acc.spree = None;
                acc.quiet_until = ctx.day_end + QUIET_AFTER_FRAUD;
            }
        }
        return;
    }
    let r: f64 = ctx.rng.gen();
    if acc.quiet_until > ctx.day_start || r >= P_CARD_TESTING + P_TAKEOVER + P_STOLEN_CARD {
        return;
    }
    if r < P_CARD_TESTING {
        card_testing(idx, acc, world, ctx);
    } else if r < P_CARD_TESTING + P_TAKEOVER {
        account_takeover(idx, acc, world, ctx);
    } else {
        ctx.episodes[Pattern::StolenCard as usize] += 1;
        let len = ctx.rng.gen_range(1..=14);
        let spree = Spree {
            last_day: day + len - 1,
            device: ctx.new_device(),
        };
        stolen_card_day(idx, acc, spree, true, world, ctx);
        if len > 1 {
            acc.spree = Some(spree);
        } else {
            acc.quiet_until = ctx.day_end + QUIET_AFTER_FRAUD;
        }
    }
}

/// Card holders by home city and country, to pick local victims.
struct Residents {
    by_city: Vec<Vec<u32>>,
    by_country: Vec<Vec<u32>>,
}

impl Residents {
    fn new(world: &World, accounts: &[Account]) -> Residents {
        let mut r = Residents {
            by_city: vec![Vec::new(); world.cities.len()],
            by_country: vec![Vec::new(); COUNTRIES.len()],
        };
        for (i, a) in accounts.iter().enumerate() {
            if let Some(v) = r.by_city.get_mut(a.city as usize) {
                v.push(i as u32);
            }
            if let Some(v) = r.by_country.get_mut(a.country as usize) {
                v.push(i as u32);
            }
        }
        r
    }

    /// Victim of a compromised merchant: mostly a card holder living in the
    /// merchant's city or country (cards skimmed locally), else anyone.
    fn victim(&self, rng: &mut ChaCha8Rng, world: &World, merchant: u32, accounts: usize) -> usize {
        let (city, country) = world
            .merchants
            .get(merchant as usize)
            .map_or((0, 0), |m| (m.city as usize, m.country as usize));
        let r: f64 = rng.gen();
        let local = if r < 0.5 {
            self.by_city.get(city)
        } else if r < 0.8 {
            self.by_country.get(country)
        } else {
            None
        };
        match local {
            Some(v) if !v.is_empty() => v[rng.gen_range(0..v.len())] as usize,
            _ => rng.gen_range(0..accounts.max(1)),
        }
    }
}

struct Sim {
    world: World,
    accounts: Vec<Account>,
    residents: Residents,
    ctx: Ctx,
    compromised: Vec<Compromise>,
    /// Index into `compromised` per merchant, `u32::MAX` if not compromised.
    slot_of: Vec<u32>,
    slots: usize,
    slot_start_p: f64,
}

impl Sim {
    fn new(opts: &GenerateOptions) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        let world = World::build(&mut rng, opts.merchants);
        let mut ctx = Ctx {
            rng,
            next_device: 0,
            next_seq: 0,
            today: Vec::new(),
            carry: Vec::new(),
            day: 0,
            day_start: 0,
            day_end: 0,
            weekday: 1.0,
            episodes: [0; 4],
        };
        let accounts: Vec<Account> = (0..opts.accounts)
            .map(|_| build_account(&world, &mut ctx))
            .collect();
        let residents = Residents::new(&world, &accounts);
        // Keep on average `expected` merchants compromised: `slots` episodes
        // at most, each slot idle for a mean time that yields that occupancy.
        let expected = opts.merchants as f64 * COMPROMISED_PER_MERCHANT;
        let slots = expected.ceil().max(1.0) as usize;
        let occupancy = (expected / slots as f64).min(1.0);
        let idle_days = COMPROMISE_MEAN_DAYS * (1.0 / occupancy - 1.0);
        let slot_start_p = (1.0 / idle_days.max(1e-9)).min(1.0);
        Sim {
            slot_of: vec![u32::MAX; world.merchants.len()],
            world,
            accounts,
            residents,
            ctx,
            compromised: Vec::new(),
            slots,
            slot_start_p,
        }
    }

    fn reindex_compromised(&mut self) {
        for c in &self.compromised {
            if let Some(s) = self.slot_of.get_mut(c.merchant as usize) {
                *s = u32::MAX;
            }
        }
    }

    /// Pattern 3: a few card-present merchants are compromised (skimmer,
    /// colluding staff) for 2-4 weeks; cloned cards of other card holders are
    /// run through them, making up 30-60% of their card-present volume.
    fn compromised_merchants(&mut self) {
        let day = self.ctx.day;
        self.reindex_compromised();
        self.compromised.retain(|c| c.last_day >= day);
        let free = self.slots.saturating_sub(self.compromised.len());
        for _ in 0..free {
            if self.ctx.rng.gen::<f64>() >= self.slot_start_p {
                continue;
            }
            let taken: Vec<u32> = self.compromised.iter().map(|c| c.merchant).collect();
            let merchant =
                self.world
                    .pick_avoiding(&mut self.ctx.rng, &[&self.world.skimmable], &taken);
            if taken.contains(&merchant) {
                continue;
            }
            let len = self.ctx.rng.gen_range(14..=28);
            let share = uniform(&mut self.ctx.rng, 0.3, 0.6);
            self.ctx.episodes[Pattern::CompromisedMerchant as usize] += 1;
            self.compromised.push(Compromise {
                merchant,
                share,
                last_day: day + len - 1,
            });
        }
        if self.compromised.is_empty() {
            return;
        }
        for (k, c) in self.compromised.iter().enumerate() {
            if let Some(s) = self.slot_of.get_mut(c.merchant as usize) {
                *s = k as u32;
            }
        }
        let mut times: Vec<Vec<i64>> = vec![Vec::new(); self.compromised.len()];
        for e in &self.ctx.today {
            if e.fraud.is_some() || e.channel == Channel::Ecom {
                continue;
            }
            if let Some(&k) = self.slot_of.get(e.merchant as usize) {
                if let Some(t) = times.get_mut(k as usize) {
                    t.push(e.ts);
                }
            }
        }
        let mu = MEDIAN_SPEND.ln();
        for (c, genuine) in self.compromised.iter().zip(&times) {
            if genuine.is_empty() {
                continue;
            }
            let ctx = &mut self.ctx;
            let lambda = genuine.len() as f64 * c.share / (1.0 - c.share);
            let n = poisson(&mut ctx.rng, lambda);
            for _ in 0..n {
                let base = genuine[ctx.rng.gen_range(0..genuine.len())];
                let ts = (base + (1_800.0 * normal(&mut ctx.rng)) as i64)
                    .clamp(ctx.day_start, ctx.day_end - 1);
                let victim = self.residents.victim(
                    &mut ctx.rng,
                    &self.world,
                    c.merchant,
                    self.accounts.len(),
                );
                let device = self.accounts.get(victim).map_or(0, |a| a.device);
                let world = &self.world;
                let channel = world.cp_channel(&mut ctx.rng, c.merchant);
                let cents = world.amount(&mut ctx.rng, c.merchant, mu, TX_SIGMA, 1.0);
                let place = world.merchant_place(c.merchant);
                let fraud = ctx.fraud(Pattern::CompromisedMerchant);
                ctx.push(Event {
                    ts,
                    seq: 0,
                    account: victim as u32,
                    merchant: c.merchant,
                    cents,
                    channel,
                    device,
                    country: place.0,
                    lat: place.1,
                    lon: place.2,
                    fraud,
                });
            }
        }
    }

    /// Simulates one day into `ctx.today`, sorted by time.
    fn day(&mut self, day: u32, start: i64) {
        let ctx = &mut self.ctx;
        ctx.day = day;
        ctx.day_start = start + i64::from(day) * DAY;
        ctx.day_end = ctx.day_start + DAY;
        let weekday = (ctx.day_start.div_euclid(DAY) + 4).rem_euclid(7) as usize;
        ctx.weekday = WEEKDAY_FACTOR[weekday];
        ctx.today.clear();
        let day_end = ctx.day_end;
        let (due, later): (Vec<Event>, Vec<Event>) =
            ctx.carry.drain(..).partition(|e| e.ts < day_end);
        ctx.today.extend(due);
        ctx.carry = later;

        for (idx, acc) in self.accounts.iter_mut().enumerate() {
            simulate_account(idx as u32, acc, &self.world, &mut self.ctx);
        }
        self.compromised_merchants();
        self.ctx.today.sort_unstable_by_key(|e| (e.ts, e.seq));
    }
}

// ---------------------------------------------------------------------------
// Output.

/// Seconds since the epoch as RFC 3339 UTC with seconds precision.
struct Rfc3339(i64);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(DAY);
        let secs = self.0.rem_euclid(DAY);
        // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            secs / HOUR,
            secs % HOUR / 60,
            secs % 60
        )
    }
}

struct Out {
    path: PathBuf,
    w: BufWriter<File>,
}

impl Out {
    fn create(path: PathBuf) -> Result<Out, GenerateError> {
        match File::create(&path) {
            Ok(f) => Ok(Out {
                w: BufWriter::with_capacity(1 << 20, f),
                path,
            }),
            Err(source) => Err(GenerateError::Io { path, source }),
        }
    }

    fn err(&self, source: std::io::Error) -> GenerateError {
        GenerateError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn finish(mut self) -> Result<(), GenerateError> {
        self.w.flush().map_err(|e| self.err(e))?;
        self.w.get_ref().sync_all().map_err(|e| self.err(e))
    }
}

fn write_tx(w: &mut impl Write, id: u64, e: &Event, world: &World) -> std::io::Result<()> {
    let country = COUNTRIES.get(e.country as usize).map_or("XX", |c| c.code);
    writeln!(
        w,
        "{{\"tx_id\":\"t{id:09}\",\"ts\":\"{}\",\"account_id\":\"c{acc}\",\"merchant_id\":\"m{}\",\
         \"amount\":{}.{:02},\"currency\":\"EUR\",\"card_id\":\"k{acc}\",\"mcc\":\"{}\",\
         \"country\":\"{country}\",\"channel\":\"{}\",\"device_id\":\"d{}\",\"lat\":{:.4},\"lon\":{:.4}}}",
        Rfc3339(e.ts),
        e.merchant + 1,
        e.cents / 100,
        e.cents % 100,
        world.spec(e.merchant).code,
        e.channel.as_str(),
        e.device,
        e.lat,
        e.lon,
        acc = e.account + 1,
    )
}

fn write_label(w: &mut impl Write, id: u64, e: &Event, delay: i64) -> std::io::Result<()> {
    // Chargebacks are processed in hourly batches.
    let reported = (e.ts + delay).div_euclid(HOUR) * HOUR + HOUR;
    writeln!(
        w,
        "{{\"tx_id\":\"t{id:09}\",\"account_id\":\"c{}\",\"fraud\":true,\"reported_at\":\"{}\"}}",
        e.account + 1,
        Rfc3339(reported)
    )
}

fn check(
    name: &'static str,
    value: impl ToString,
    ok: bool,
    reason: &'static str,
) -> Result<(), GenerateError> {
    if ok {
        Ok(())
    } else {
        Err(GenerateError::InvalidOption {
            name,
            value: value.to_string(),
            reason,
        })
    }
}

fn validate(opts: &GenerateOptions) -> Result<(), GenerateError> {
    check(
        "accounts",
        opts.accounts,
        opts.accounts > 0,
        "must be at least 1",
    )?;
    check(
        "accounts",
        opts.accounts,
        opts.accounts <= MAX_ACCOUNTS,
        "must be at most 50000000",
    )?;
    check(
        "merchants",
        opts.merchants,
        opts.merchants > 0,
        "must be at least 1",
    )?;
    check(
        "merchants",
        opts.merchants,
        opts.merchants <= MAX_MERCHANTS,
        "must be at most 10000000",
    )?;
    check("days", opts.days, opts.days > 0, "must be at least 1")?;
    check(
        "days",
        opts.days,
        opts.days <= MAX_DAYS,
        "must be at most 3650",
    )
}

fn run(opts: &GenerateOptions, out_dir: &Path) -> Result<Stats, GenerateError> {
    validate(opts)?;
    fs::create_dir_all(out_dir).map_err(|source| GenerateError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let mut txs = Out::create(out_dir.join("transactions.jsonl"))?;
    let mut labels = Out::create(out_dir.join("labels.jsonl"))?;

    let mut sim = Sim::new(opts);
    let start = opts.start.timestamp();
    let mut stats = Stats::default();
    for day in 0..opts.days {
        sim.day(day, start);
        for e in &sim.ctx.today {
            stats.transactions += 1;
            let id = stats.transactions;
            write_tx(&mut txs.w, id, e, &sim.world).map_err(|err| txs.err(err))?;
            if let Some(f) = &e.fraud {
                stats.frauds[f.pattern as usize] += 1;
                write_label(&mut labels.w, id, e, f.delay).map_err(|err| labels.err(err))?;
            }
        }
    }
    // Episodes spilling past the last day are cut off, never written.
    stats.episodes = sim.ctx.episodes;
    txs.finish()?;
    labels.finish()?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("fraudstream-gen-{name}-{}", std::process::id()))
    }

    fn opts(accounts: usize, merchants: usize, days: u32, seed: u64) -> GenerateOptions {
        GenerateOptions {
            accounts,
            merchants,
            days,
            seed,
            ..GenerateOptions::default()
        }
    }

    fn read_lines(path: &Path) -> Vec<serde_json::Value> {
        fs::read_to_string(path)
            .expect("read output")
            .lines()
            .map(|l| serde_json::from_str(l).expect("line is JSON"))
            .collect()
    }

    fn ts_of(v: &serde_json::Value, field: &str) -> DateTime<Utc> {
        let s = v[field].as_str().expect("timestamp string");
        assert!(s.len() == 20 && s.ends_with('Z'), "bad timestamp {s}");
        DateTime::parse_from_rfc3339(s)
            .expect("RFC 3339")
            .with_timezone(&Utc)
    }

    #[test]
    fn rejects_invalid_options() {
        let dir = tmp("invalid");
        for (o, field) in [
            (opts(0, 10, 5, 1), "accounts"),
            (opts(10, 0, 5, 1), "merchants"),
            (opts(10, 10, 0, 1), "days"),
        ] {
            match generate(&o, &dir) {
                Err(GenerateError::InvalidOption { name, value, .. }) => {
                    assert_eq!(name, field);
                    assert_eq!(value, "0");
                }
                other => panic!("expected InvalidOption for {field}, got {other:?}"),
            }
        }
        assert!(!dir.exists(), "nothing is written for invalid options");
    }

    #[test]
    fn deterministic_for_a_seed() {
        let (a, b, c) = (tmp("det-a"), tmp("det-b"), tmp("det-c"));
        let sa = generate(&opts(300, 60, 20, 7), &a).expect("run a");
        let sb = generate(&opts(300, 60, 20, 7), &b).expect("run b");
        generate(&opts(300, 60, 20, 8), &c).expect("run c");
        assert_eq!(sa, sb);
        for f in ["transactions.jsonl", "labels.jsonl"] {
            let x = fs::read(a.join(f)).expect("read a");
            assert_eq!(x, fs::read(b.join(f)).expect("read b"), "{f} differs");
        }
        assert_ne!(
            fs::read(a.join("transactions.jsonl")).expect("read a"),
            fs::read(c.join("transactions.jsonl")).expect("read c")
        );
        for d in [a, b, c] {
            let _ = fs::remove_dir_all(d);
        }
    }

    #[test]
    fn transactions_are_ordered_and_complete() {
        let dir = tmp("lines");
        let summary = generate(&opts(400, 80, 21, 3), &dir).expect("run");
        let txs = read_lines(&dir.join("transactions.jsonl"));
        assert_eq!(txs.len() as u64, summary.transactions);
        assert!(summary.transactions > 5_000, "{summary:?}");
        let start = GenerateOptions::default().start;
        let end = start + chrono::Duration::days(21);
        let mut prev = start;
        for (i, t) in txs.iter().enumerate() {
            assert_eq!(t["tx_id"], format!("t{:09}", i + 1));
            let ts = ts_of(t, "ts");
            assert!(ts >= prev && ts < end, "ts {ts} out of order at line {i}");
            prev = ts;
            for (field, prefix) in [
                ("account_id", 'c'),
                ("merchant_id", 'm'),
                ("card_id", 'k'),
                ("device_id", 'd'),
            ] {
                let s = t[field].as_str().expect(field);
                assert!(
                    s.starts_with(prefix) && s[1..].parse::<u64>().is_ok(),
                    "{s}"
                );
            }
            assert_eq!(
                t["account_id"].as_str().map(|s| &s[1..]),
                t["card_id"].as_str().map(|s| &s[1..])
            );
            let amount = t["amount"].as_f64().expect("amount");
            assert!(amount > 0.0 && ((amount * 100.0).round() - amount * 100.0).abs() < 1e-6);
            assert_eq!(t["currency"], "EUR");
            assert!(["pos", "ecom", "atm"].contains(&t["channel"].as_str().expect("channel")));
            assert_eq!(t["mcc"].as_str().expect("mcc").len(), 4);
            assert_eq!(t["country"].as_str().expect("country").len(), 2);
            let (lat, lon) = (
                t["lat"].as_f64().expect("lat"),
                t["lon"].as_f64().expect("lon"),
            );
            assert!((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon));
        }
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn labels_point_to_earlier_fraud_transactions() {
        let dir = tmp("labels");
        let summary = generate(&opts(1_500, 150, 45, 11), &dir).expect("run");
        let txs = read_lines(&dir.join("transactions.jsonl"));
        let labels = read_lines(&dir.join("labels.jsonl"));
        assert_eq!(labels.len() as u64, summary.labels);
        assert_eq!(summary.labels, summary.frauds);
        assert!(summary.frauds > 0);
        let by_id: HashMap<&str, &serde_json::Value> = txs
            .iter()
            .map(|t| (t["tx_id"].as_str().expect("tx_id"), t))
            .collect();
        let mut prev_tx_ts = None;
        for l in &labels {
            let tx = by_id[l["tx_id"].as_str().expect("tx_id")];
            assert_eq!(l["account_id"], tx["account_id"]);
            assert_eq!(l["fraud"], true);
            let (ts, reported) = (ts_of(tx, "ts"), ts_of(l, "reported_at"));
            let delay = reported - ts;
            assert!(delay >= chrono::Duration::days(2), "{delay}");
            assert!(delay <= chrono::Duration::days(43), "{delay}");
            assert!(prev_tx_ts.is_none_or(|p| p <= ts), "labels sorted by tx ts");
            prev_tx_ts = Some(ts);
        }
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn fraud_rate_within_band_and_all_patterns_present() {
        for seed in [1, 2, 3] {
            let dir = tmp(&format!("rate-{seed}"));
            let stats = run(&opts(2_000, 200, 60, seed), &dir).expect("run");
            let frauds: u64 = stats.frauds.iter().sum();
            let rate = frauds as f64 / stats.transactions as f64;
            assert!(
                (0.002..=0.01).contains(&rate),
                "seed {seed}: rate {rate} {stats:?}"
            );
            assert!(
                stats.frauds.iter().all(|&n| n > 0),
                "seed {seed}: {stats:?}"
            );
            let _ = fs::remove_dir_all(dir);
        }
    }

    #[test]
    fn tiny_worlds_work() {
        for (accounts, merchants, days) in [(1, 1, 3), (3, 2, 40), (50, 1, 10)] {
            let dir = tmp(&format!("tiny-{accounts}-{merchants}"));
            let s = generate(&opts(accounts, merchants, days, 9), &dir).expect("run");
            assert!(s.transactions > 0, "{s:?}");
            let _ = fs::remove_dir_all(dir);
        }
    }

    #[test]
    fn timestamps_match_chrono() {
        for secs in [0, 1_522_540_831, 951_782_400, 4_107_542_399, -86_401] {
            let expected = Utc
                .timestamp_opt(secs, 0)
                .single()
                .expect("valid")
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            assert_eq!(Rfc3339(secs).to_string(), expected);
        }
    }

    #[test]
    fn sampling_helpers_have_expected_means() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let n = 20_000;
        let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
        let p = mean((0..n).map(|_| f64::from(poisson(&mut rng, 3.0))).collect());
        assert!((p - 3.0).abs() < 0.1, "{p}");
        let p = mean((0..n).map(|_| f64::from(poisson(&mut rng, 50.0))).collect());
        assert!((p - 50.0).abs() < 0.5, "{p}");
        let e = mean((0..n).map(|_| exponential(&mut rng, 2.0)).collect());
        assert!((e - 2.0).abs() < 0.1, "{e}");
        let z = mean((0..n).map(|_| normal(&mut rng)).collect());
        assert!(z.abs() < 0.05, "{z}");
    }

    /// Measures the documented large run:
    /// `cargo test --release -- --ignored --nocapture measure_large_run`.
    #[test]
    #[ignore]
    fn measure_large_run() {
        let dir = tmp("large");
        let o = opts(10_000, 1_000, 150, 42);
        let t0 = std::time::Instant::now();
        let stats = run(&o, &dir).expect("run");
        let secs = t0.elapsed().as_secs_f64();
        let mb = |f: &str| fs::metadata(dir.join(f)).map_or(0, |m| m.len()) as f64 / 1e6;
        let frauds: u64 = stats.frauds.iter().sum();
        println!(
            "transactions {} frauds {} ({:.3}%) {:?} episodes {:?} tx {:.0} MB labels {:.2} MB in {:.2} s",
            stats.transactions,
            frauds,
            100.0 * frauds as f64 / stats.transactions as f64,
            stats.frauds,
            stats.episodes,
            mb("transactions.jsonl"),
            mb("labels.jsonl"),
            secs
        );
        for (name, n) in [
            "card_testing",
            "account_takeover",
            "compromised_merchant",
            "stolen_card",
        ]
        .iter()
        .zip(stats.frauds)
        {
            println!(
                "  {name}: {n} ({:.3}%)",
                100.0 * n as f64 / stats.transactions as f64
            );
        }
        let _ = fs::remove_dir_all(dir);
    }
}
