"""Label vocabularies, in a module with no dependencies so generators and GPU scripts can import them."""

# SurgVU's surgical steps, in the challenge's official order (class index = position).
STEP_CLASSES: tuple[str, ...] = (
    "range_of_motion",
    "rectal_artery_vein",
    "retraction_collision_avoidance",
    "skills_application",
    "suspensory_ligaments",
    "suturing",
    "uterine_horn",
    "other",
)

# The synthetic demo data's extra labels (labels/<case>/motion.csv and events.csv): instrument motion classes and
# the rare event that stands in for a sterility breach.
MOTION_CLASSES: tuple[str, ...] = ("idle", "left", "right", "up", "down", "circle_cw", "circle_ccw", "grasp")
EVENT_LABEL = "breach"
