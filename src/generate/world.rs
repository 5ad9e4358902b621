//! The world: model parameters, merchant categories, countries and cities, merchants, and
//! the pools to draw them from.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::sampling::*;

pub(super) const DAY: i64 = 86_400;
pub(super) const HOUR: i64 = 3_600;

/// Upper bounds that keep ids in `u32` and dates in range.
pub(super) const MAX_ACCOUNTS: usize = 50_000_000;
pub(super) const MAX_MERCHANTS: usize = 10_000_000;
pub(super) const MAX_DAYS: u32 = 3_650;

/// Relative activity per local hour of day (fewer transactions at night).
pub(super) const HOUR_WEIGHTS: [f64; 24] = [
    0.25, 0.15, 0.10, 0.08, 0.08, 0.12, 0.30, 0.60, 0.90, 1.00, 1.10, 1.30, 1.50, 1.30, 1.10, 1.10,
    1.20, 1.40, 1.50, 1.40, 1.20, 0.90, 0.60, 0.40,
];

/// Activity per weekday, Sunday first.
pub(super) const WEEKDAY_FACTOR: [f64; 7] = [0.85, 0.95, 0.95, 1.0, 1.0, 1.1, 1.15];

/// Median genuine amount of an average account, in EUR.
pub(super) const MEDIAN_SPEND: f64 = 25.0;
/// Spread of the per-account median spend (log scale).
pub(super) const ACCOUNT_SPEND_SIGMA: f64 = 0.5;
/// Spread of one account's amounts around its median (log scale).
pub(super) const TX_SIGMA: f64 = 0.7;

/// Share of genuine transactions at one of the account's usual merchants.
pub(super) const PREFERRED_SHARE: f64 = 0.88;
/// Daily probability that an account starts a trip abroad.
pub(super) const TRIP_START: f64 = 1.0 / 200.0;
/// Daily probability that an account replaces its phone (new device id).
pub(super) const DEVICE_CHANGE: f64 = 1.0 / 400.0;

/// Daily probabilities, per account, of starting a fraud episode.
pub(super) const P_CARD_TESTING: f64 = 1.5e-4;
pub(super) const P_TAKEOVER: f64 = 1.2e-4;
pub(super) const P_STOLEN_CARD: f64 = 3.0e-4;
/// Days an account is left alone after a fraud episode (card reissued).
pub(super) const QUIET_AFTER_FRAUD: i64 = 60 * DAY;
/// Expected number of compromised merchants at any time per merchant.
pub(super) const COMPROMISED_PER_MERCHANT: f64 = 1.0 / 350.0;
/// Mean length of a merchant compromise in days (uniform 14..=28).
pub(super) const COMPROMISE_MEAN_DAYS: f64 = 21.0;

/// Chargeback delay: lognormal with this median (days), clamped.
pub(super) const LABEL_MEDIAN_DAYS: f64 = 10.0;
pub(super) const LABEL_SIGMA: f64 = 0.6;
pub(super) const LABEL_MIN_DAYS: f64 = 2.0;
pub(super) const LABEL_MAX_DAYS: f64 = 42.0;

/// A merchant category: code, share of merchants, amount factor relative to
/// the account's median, channel mix (pos, ecom, atm).
pub(super) struct MccSpec {
    pub(super) code: &'static str,
    pub(super) weight: f64,
    pub(super) amount: f64,
    pub(super) mix: [f64; 3],
    /// Typical target of card testing (cheap digital goods, donations).
    pub(super) testing: bool,
    /// Resellable goods that fraudsters cash out on.
    pub(super) big: bool,
    /// Card-present terminal typical for skimming.
    pub(super) skimmable: bool,
}

pub(super) const fn mcc(
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

pub(super) const NONE: (bool, bool, bool) = (false, false, false);
pub(super) const TESTING: (bool, bool, bool) = (true, false, false);
pub(super) const BIG: (bool, bool, bool) = (false, true, false);
pub(super) const SKIM: (bool, bool, bool) = (false, false, true);

#[rustfmt::skip]
pub(super) const MCCS: &[MccSpec] = &[
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
pub(super) struct CountrySpec {
    pub(super) code: &'static str,
    pub(super) home: f64,
    pub(super) travel: f64,
    pub(super) risky: f64,
    pub(super) utc_offset: i64,
    pub(super) cities: &'static [(f64, f64, f64)],
}

pub(super) const fn country(
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
pub(super) const COUNTRIES: &[CountrySpec] = &[
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

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Channel {
    Pos,
    Ecom,
    Atm,
}

impl Channel {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Channel::Pos => "pos",
            Channel::Ecom => "ecom",
            Channel::Atm => "atm",
        }
    }
}

pub(super) struct Merchant {
    pub(super) mcc: usize,
    pub(super) lat: f64,
    pub(super) lon: f64,
    pub(super) country: u8,
    pub(super) city: u16,
}

pub(super) struct City {
    pub(super) country: u8,
    pub(super) lat: f64,
    pub(super) lon: f64,
}

pub(super) struct World {
    pub(super) merchants: Vec<Merchant>,
    pub(super) cities: Vec<City>,
    /// Cities of each country, weighted by size.
    pub(super) country_cities: Vec<Pool>,
    pub(super) home_countries: Pool,
    pub(super) travel_countries: Pool,
    pub(super) risky_countries: Pool,
    /// Card-present merchants per city and per country, by popularity.
    pub(super) city_cp: Vec<Pool>,
    pub(super) country_cp: Vec<Pool>,
    pub(super) ecom: Pool,
    pub(super) testing: Pool,
    pub(super) big: Pool,
    pub(super) skimmable: Pool,
    pub(super) all: Pool,
    pub(super) hour_cdf: Vec<f64>,
}

impl World {
    pub(super) fn build(rng: &mut ChaCha8Rng, merchants: usize) -> World {
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
    pub(super) fn pick(&self, rng: &mut ChaCha8Rng, pools: &[&Pool]) -> u32 {
        pools
            .iter()
            .chain(std::iter::once(&&self.all))
            .find_map(|p| p.sample(rng))
            .unwrap_or(0)
    }

    /// Like [`World::pick`] but tries to avoid the ids in `avoid`.
    pub(super) fn pick_avoiding(
        &self,
        rng: &mut ChaCha8Rng,
        pools: &[&Pool],
        avoid: &[u32],
    ) -> u32 {
        let mut m = self.pick(rng, pools);
        for _ in 0..6 {
            if !avoid.contains(&m) {
                break;
            }
            m = self.pick(rng, pools);
        }
        m
    }

    pub(super) fn spec(&self, merchant: u32) -> &MccSpec {
        let mcc = self
            .merchants
            .get(merchant as usize)
            .map(|m| m.mcc)
            .unwrap_or(0);
        &MCCS[mcc.min(MCCS.len() - 1)]
    }

    pub(super) fn channel(&self, rng: &mut ChaCha8Rng, merchant: u32) -> Channel {
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
    pub(super) fn cp_channel(&self, rng: &mut ChaCha8Rng, merchant: u32) -> Channel {
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
    pub(super) fn amount(
        &self,
        rng: &mut ChaCha8Rng,
        merchant: u32,
        mu: f64,
        sigma: f64,
        mult: f64,
    ) -> i64 {
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
    pub(super) fn merchant_place(&self, merchant: u32) -> (u8, f64, f64) {
        self.merchants
            .get(merchant as usize)
            .map(|m| (m.country, m.lat, m.lon))
            .unwrap_or((0, 0.0, 0.0))
    }

    /// Geolocated IP address somewhere in a city.
    pub(super) fn ip_place(&self, rng: &mut ChaCha8Rng, city: u16) -> (u8, f64, f64) {
        match self.cities.get(city as usize) {
            Some(c) => (
                c.country,
                c.lat + 0.08 * normal(rng),
                c.lon + 0.12 * normal(rng),
            ),
            None => (0, 0.0, 0.0),
        }
    }

    pub(super) fn random_city(&self, rng: &mut ChaCha8Rng, country: u8) -> u16 {
        self.country_cities
            .get(country as usize)
            .and_then(|p| p.sample(rng))
            .unwrap_or(0) as u16
    }

    /// Where a fraudster connects from: the victim's country, another
    /// European country, or a high-risk origin.
    pub(super) fn attacker_city(&self, rng: &mut ChaCha8Rng, home: u8, foreign: f64) -> u16 {
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
