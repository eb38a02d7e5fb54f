from shopkit.settings import ServiceSettings


class TrackingSettings(ServiceSettings):
    port: int = 8083
