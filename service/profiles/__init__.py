"""Device profiles: what a simulated phone is like, mixes of them, when they are online, and the
simulated time their operations take. Knows nothing of devices' files or of HTTP."""

from service.profiles.profile import DeviceProfile, Profile, intern, parse_profile

__all__ = ["DeviceProfile", "Profile", "intern", "parse_profile"]
