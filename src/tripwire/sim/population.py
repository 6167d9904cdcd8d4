"""The users of the world: locale, time zone, device, app version, tenure, Prime, payment.

Mixes are realistic for a US-led voice shopping assistant: en-US is half the users, en-GB
about 12%, ja-JP about 8%; Echo Show is a healthy share everywhere and the largest device in
en-GB (so that en-GB × Echo Show holds ≥ 5% of sessions, enough for a monitor to see it).
Each user also has an activity level (gamma-distributed: a few heavy users, many light ones)
that scales how often they start sessions.

Everything is held as numpy arrays indexed by user; per-user ``context`` dicts are built
once and shared by every message of that user (treat messages as read-only).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

LOCALES = ("en-US", "en-GB", "de-DE", "ja-JP", "fr-FR", "es-ES", "en-IN")
LOCALE_SHARES = (0.51, 0.12, 0.09, 0.08, 0.07, 0.06, 0.07)
ENGLISH_LOCALES = frozenset({"en-US", "en-GB", "en-IN"})

#: (UTC offset in minutes, IANA name, share within the locale). DST is ignored.
TIME_ZONES: dict[str, tuple[tuple[int, str, float], ...]] = {
    "en-US": (
        (-300, "America/New_York", 0.47),
        (-360, "America/Chicago", 0.29),
        (-420, "America/Denver", 0.07),
        (-480, "America/Los_Angeles", 0.17),
    ),
    "en-GB": ((0, "Europe/London", 1.0),),
    "de-DE": ((60, "Europe/Berlin", 1.0),),
    "ja-JP": ((540, "Asia/Tokyo", 1.0),),
    "fr-FR": ((60, "Europe/Paris", 1.0),),
    "es-ES": ((60, "Europe/Madrid", 1.0),),
    "en-IN": ((330, "Asia/Kolkata", 1.0),),
}

DEVICES = ("Echo Dot", "Echo Show", "Fire TV", "mobile app", "web")
_DEFAULT_DEVICE_MIX = (0.30, 0.24, 0.10, 0.24, 0.12)
DEVICE_MIX: dict[str, tuple[float, ...]] = {
    "en-GB": (0.26, 0.36, 0.08, 0.20, 0.10),
    "ja-JP": (0.18, 0.16, 0.06, 0.44, 0.16),
    "en-IN": (0.22, 0.10, 0.08, 0.44, 0.16),
}
#: How much more (or less) often a user of each device starts a session.
DEVICE_ACTIVITY = (0.9, 1.25, 0.8, 1.1, 0.9)
#: Device family → (os choices, os shares, app versions, version shares, device type).
DEVICE_SOFTWARE: dict[
    str, tuple[tuple[str, ...], tuple[float, ...], tuple[str, ...], tuple[float, ...], str]
] = {
    "Echo Dot": (("Fire OS",), (1.0,), ("8.6.1", "8.7.0"), (0.4, 0.6), "smart_speaker"),
    "Echo Show": (("Fire OS",), (1.0,), ("9.2.0", "9.3.1"), (0.3, 0.7), "smart_display"),
    "Fire TV": (("Fire OS",), (1.0,), ("7.6.4",), (1.0,), "tv"),
    "mobile app": (
        ("iOS", "Android"),
        (0.55, 0.45),
        ("5.11.2", "5.12.0", "5.13.0"),
        (0.15, 0.35, 0.5),
        "mobile",
    ),
    "web": (("Web",), (1.0,), ("2026.11.1",), (1.0,), "desktop"),
}

TENURES = ("new", "established", "loyal")
TENURE_SHARES = (0.15, 0.35, 0.50)
TENURE_DAYS = ((1, 29), (30, 365), (366, 2500))
TENURE_ACTIVITY = (0.7, 1.0, 1.15)

PAYMENT_METHODS = ("tokenized-card", "credit-card", "gift-balance", "pay-later")
PAYMENT_SHARES = (0.45, 0.30, 0.15, 0.10)
PAYMENT_SHARES_JP = (0.30, 0.50, 0.15, 0.05)
PRIME_RATE = {"new": 0.35, "established": 0.6, "loyal": 0.78}

#: Gamma shape of user activity (mean 1): smaller = more unequal.
ACTIVITY_SHAPE = 0.8


@dataclass(frozen=True)
class Population:
    """All users as parallel arrays (index = user number)."""

    user_ids: list[str]
    anonymous_ids: list[str]
    locale: np.ndarray  # index into LOCALES
    tz_offset_min: np.ndarray
    tz_name: list[str]
    device: np.ndarray  # index into DEVICES
    app_version: list[str]
    os: list[str]
    tenure: np.ndarray  # index into TENURES
    signup_date: list[str]
    prime: np.ndarray  # bool
    payment: np.ndarray  # index into PAYMENT_METHODS
    activity: np.ndarray  # relative session rate, mean ≈ 1
    contexts: list[dict[str, Any]]

    @property
    def size(self) -> int:
        return len(self.user_ids)

    def traits(self, user: int) -> dict[str, Any]:
        """The traits of an ``identify`` call for one user."""
        return {
            "locale": LOCALES[self.locale[user]],
            "device": DEVICES[self.device[user]],
            "tenure": TENURES[self.tenure[user]],
            "prime": bool(self.prime[user]),
            "payment_method": PAYMENT_METHODS[self.payment[user]],
            "signup_date": self.signup_date[user],
        }


def _choice(rng: np.random.Generator, shares: tuple[float, ...], size: int) -> np.ndarray:
    probs = np.asarray(shares, dtype=float)
    return rng.choice(len(probs), size=size, p=probs / probs.sum())


def build_population(rng: np.random.Generator, users: int, start: datetime) -> Population:
    """Draw ``users`` users; ``start`` anchors signup dates (tenure is as of ``start``)."""
    locale = _choice(rng, LOCALE_SHARES, users)
    device = np.empty(users, dtype=np.int64)
    tz_offset = np.empty(users, dtype=np.int64)
    tz_name: list[str] = [""] * users
    for index, name in enumerate(LOCALES):
        members = np.flatnonzero(locale == index)
        device[members] = _choice(rng, DEVICE_MIX.get(name, _DEFAULT_DEVICE_MIX), members.size)
        zones = TIME_ZONES[name]
        picks = _choice(rng, tuple(z[2] for z in zones), members.size)
        tz_offset[members] = np.array([z[0] for z in zones])[picks]
        for member, pick in zip(members.tolist(), picks.tolist(), strict=True):
            tz_name[member] = zones[pick][1]

    app_version: list[str] = [""] * users
    os_name: list[str] = [""] * users
    for index, name in enumerate(DEVICES):
        members = np.flatnonzero(device == index)
        oses, os_shares, versions, version_shares, _ = DEVICE_SOFTWARE[name]
        os_pick = _choice(rng, os_shares, members.size)
        version_pick = _choice(rng, version_shares, members.size)
        for member, o, v in zip(
            members.tolist(), os_pick.tolist(), version_pick.tolist(), strict=True
        ):
            os_name[member] = oses[o]
            app_version[member] = versions[v]

    tenure = _choice(rng, TENURE_SHARES, users)
    low = np.array([d[0] for d in TENURE_DAYS])[tenure]
    high = np.array([d[1] for d in TENURE_DAYS])[tenure]
    tenure_days = rng.integers(low, high + 1)
    start_day = np.datetime64(start.date(), "D")
    signup = np.datetime_as_string(
        start_day - tenure_days.astype("timedelta64[D]"), unit="D"
    ).tolist()

    prime = rng.random(users) < np.array([PRIME_RATE[t] for t in TENURES])[tenure]
    payment = np.empty(users, dtype=np.int64)
    jp = locale == LOCALES.index("ja-JP")
    payment[jp] = _choice(rng, PAYMENT_SHARES_JP, int(jp.sum()))
    payment[~jp] = _choice(rng, PAYMENT_SHARES, int((~jp).sum()))

    activity = rng.gamma(ACTIVITY_SHAPE, 1.0 / ACTIVITY_SHAPE, users)
    activity *= np.asarray(DEVICE_ACTIVITY)[device] * np.asarray(TENURE_ACTIVITY)[tenure]
    activity /= activity.mean()

    user_ids = [f"user-{i:07d}" for i in range(users)]
    anon_raw = rng.integers(0, 2**63, size=users, dtype=np.int64)
    anonymous_ids = [f"anon-{v:016x}" for v in anon_raw.tolist()]

    contexts = []
    for i in range(users):
        device_name = DEVICES[device[i]]
        contexts.append(
            {
                "locale": LOCALES[locale[i]],
                "timezone": tz_name[i],
                "device": {"model": device_name, "type": DEVICE_SOFTWARE[device_name][4]},
                "app": {"name": "shopping-assistant", "version": app_version[i]},
                "os": {"name": os_name[i]},
                "library": {"name": "tripwire-sim", "version": "1"},
                "traits": {
                    "tenure": TENURES[tenure[i]],
                    "prime": bool(prime[i]),
                    "payment_method": PAYMENT_METHODS[payment[i]],
                },
            }
        )
    return Population(
        user_ids=user_ids,
        anonymous_ids=anonymous_ids,
        locale=locale,
        tz_offset_min=tz_offset,
        tz_name=tz_name,
        device=device,
        app_version=app_version,
        os=os_name,
        tenure=tenure,
        signup_date=signup,
        prime=prime,
        payment=payment,
        activity=activity,
        contexts=contexts,
    )
