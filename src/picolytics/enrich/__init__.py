"""What an event is enriched with: user agent and bot check, GeoIP, visitor hash and salts."""
