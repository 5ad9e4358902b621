//! Accounts and their behaviour: genuine spending, trips and new devices, the fraud patterns
//! (card testing, account takeover, stolen-card spree, compromised merchant) and the
//! day-by-day simulation.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::sampling::*;
use super::world::*;
use super::GenerateOptions;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pattern {
    CardTesting = 0,
    AccountTakeover = 1,
    CompromisedMerchant = 2,
    StolenCard = 3,
}

#[derive(Clone, Copy)]
pub(super) struct Trip {
    pub(super) city: u16,
    pub(super) last_day: u32,
}

#[derive(Clone, Copy)]
pub(super) struct Spree {
    pub(super) last_day: u32,
    pub(super) device: u64,
}

pub(super) struct Account {
    pub(super) country: u8,
    pub(super) city: u16,
    /// Median amount is `exp(mu)`.
    pub(super) mu: f64,
    /// Mean transactions per day.
    pub(super) rate: f64,
    /// Offset of the account's local clock from UTC, in hours.
    pub(super) utc_offset: i64,
    pub(super) device: u64,
    pub(super) second_device: Option<u64>,
    pub(super) preferred: Vec<u32>,
    pub(super) preferred_cdf: Vec<f64>,
    pub(super) trip: Option<Trip>,
    pub(super) spree: Option<Spree>,
    /// No new fraud episode before this time.
    pub(super) quiet_until: i64,
}

pub(super) struct Fraud {
    pub(super) pattern: Pattern,
    /// Seconds from the transaction to its chargeback report.
    pub(super) delay: i64,
}

pub(super) struct Event {
    pub(super) ts: i64,
    pub(super) seq: u64,
    pub(super) account: u32,
    pub(super) merchant: u32,
    pub(super) cents: i64,
    pub(super) channel: Channel,
    pub(super) device: u64,
    pub(super) country: u8,
    pub(super) lat: f64,
    pub(super) lon: f64,
    pub(super) fraud: Option<Fraud>,
}

impl Event {
    /// A transaction at `place` (country, latitude, longitude); [`Ctx::push`] numbers it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        ts: i64,
        account: u32,
        merchant: u32,
        cents: i64,
        channel: Channel,
        device: u64,
        place: (u8, f64, f64),
        fraud: Option<Fraud>,
    ) -> Event {
        Event {
            ts,
            seq: 0,
            account,
            merchant,
            cents,
            channel,
            device,
            country: place.0,
            lat: place.1,
            lon: place.2,
            fraud,
        }
    }
}

pub(super) struct Compromise {
    pub(super) merchant: u32,
    pub(super) share: f64,
    pub(super) last_day: u32,
}

/// What one run produced, per fraud pattern.
#[derive(Debug, Default, Clone)]
pub(super) struct Stats {
    pub(super) transactions: u64,
    pub(super) frauds: [u64; 4],
    pub(super) episodes: [u64; 4],
}

/// Mutable simulation state shared by all accounts.
pub(super) struct Ctx {
    pub(super) rng: ChaCha8Rng,
    pub(super) next_device: u64,
    pub(super) next_seq: u64,
    pub(super) today: Vec<Event>,
    pub(super) carry: Vec<Event>,
    pub(super) day: u32,
    pub(super) day_start: i64,
    pub(super) day_end: i64,
    pub(super) weekday: f64,
    pub(super) episodes: [u64; 4],
}

impl Ctx {
    pub(super) fn new_device(&mut self) -> u64 {
        self.next_device += 1;
        self.next_device
    }

    pub(super) fn push(&mut self, mut e: Event) {
        e.seq = self.next_seq;
        self.next_seq += 1;
        if e.ts < self.day_end {
            self.today.push(e);
        } else {
            self.carry.push(e);
        }
    }

    pub(super) fn fraud(&mut self, pattern: Pattern) -> Option<Fraud> {
        let days = lognormal(&mut self.rng, LABEL_MEDIAN_DAYS.ln(), LABEL_SIGMA)
            .clamp(LABEL_MIN_DAYS, LABEL_MAX_DAYS);
        Some(Fraud {
            pattern,
            delay: (days * DAY as f64) as i64,
        })
    }

    /// A time today following the daily rhythm in a local time zone.
    pub(super) fn rhythm_ts(&mut self, hour_cdf: &[f64], utc_offset: i64) -> i64 {
        let hour = pick_cdf(&mut self.rng, hour_cdf) as i64;
        let local = hour * HOUR + self.rng.gen_range(0..HOUR);
        let utc = (local - utc_offset * HOUR).rem_euclid(DAY);
        self.day_start + (utc - self.day_start.rem_euclid(DAY)).rem_euclid(DAY)
    }

    pub(super) fn uniform_ts(&mut self) -> i64 {
        self.day_start + self.rng.gen_range(0..DAY)
    }
}

pub(super) fn build_account(world: &World, ctx: &mut Ctx) -> Account {
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
pub(super) fn typical_amount(acc: &Account) -> f64 {
    (acc.mu + TX_SIGMA * TX_SIGMA / 2.0).exp()
}

pub(super) fn genuine_tx(idx: u32, acc: &Account, world: &World, ctx: &mut Ctx) {
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
    ctx.push(Event::new(
        ts, idx, merchant, cents, channel, device, place, None,
    ));
}

/// Pattern 1: a bot tests a compromised card with tiny amounts at several
/// (mostly online) merchants within minutes, then cashes out.
pub(super) fn card_testing(idx: u32, acc: &mut Account, world: &World, ctx: &mut Ctx) {
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
        ctx.push(Event::new(
            ts, idx, merchant, cents, channel, dev, place, fraud,
        ));
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
        ctx.push(Event::new(
            ts,
            idx,
            merchant,
            cents,
            Channel::Ecom,
            device,
            place,
            fraud,
        ));
    }
    acc.quiet_until = ts + QUIET_AFTER_FRAUD;
}

/// Pattern 2: credentials are phished; from a new device, often abroad, the
/// fraudster places several large online orders over a few hours.
pub(super) fn account_takeover(idx: u32, acc: &mut Account, world: &World, ctx: &mut Ctx) {
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
        ctx.push(Event::new(
            ts,
            idx,
            merchant,
            cents,
            Channel::Ecom,
            device,
            place,
            fraud,
        ));
        last = ts;
    }
    acc.quiet_until = last + QUIET_AFTER_FRAUD;
}

/// Pattern 4, one day of it: a stolen card is spent at merchants the holder
/// does not use, at three to six times the usual amounts.
pub(super) fn stolen_card_day(
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
        ctx.push(Event::new(
            ts, idx, merchant, cents, channel, device, place, fraud,
        ));
    }
}

/// One day of one account: travel, device change, genuine transactions,
/// and fraud episodes.
pub(super) fn simulate_account(idx: u32, acc: &mut Account, world: &World, ctx: &mut Ctx) {
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
pub(super) struct Residents {
    pub(super) by_city: Vec<Vec<u32>>,
    pub(super) by_country: Vec<Vec<u32>>,
}

impl Residents {
    pub(super) fn new(world: &World, accounts: &[Account]) -> Residents {
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
    pub(super) fn victim(
        &self,
        rng: &mut ChaCha8Rng,
        world: &World,
        merchant: u32,
        accounts: usize,
    ) -> usize {
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

pub(super) struct Sim {
    pub(super) world: World,
    pub(super) accounts: Vec<Account>,
    pub(super) residents: Residents,
    pub(super) ctx: Ctx,
    pub(super) compromised: Vec<Compromise>,
    /// Index into `compromised` per merchant, `u32::MAX` if not compromised.
    pub(super) slot_of: Vec<u32>,
    pub(super) slots: usize,
    pub(super) slot_start_p: f64,
}

impl Sim {
    pub(super) fn new(opts: &GenerateOptions) -> Sim {
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

    pub(super) fn reindex_compromised(&mut self) {
        for c in &self.compromised {
            if let Some(s) = self.slot_of.get_mut(c.merchant as usize) {
                *s = u32::MAX;
            }
        }
    }

    /// Pattern 3: a few card-present merchants are compromised (skimmer,
    /// colluding staff) for 2-4 weeks; cloned cards of other card holders are
    /// run through them, making up 30-60% of their card-present volume.
    pub(super) fn compromised_merchants(&mut self) {
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
                ctx.push(Event::new(
                    ts,
                    victim as u32,
                    c.merchant,
                    cents,
                    channel,
                    device,
                    place,
                    fraud,
                ));
            }
        }
    }

    /// Simulates one day into `ctx.today`, sorted by time.
    pub(super) fn day(&mut self, day: u32, start: i64) {
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
