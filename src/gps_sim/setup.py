from setuptools import find_packages, setup

package_name = 'gps_sim'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/models', ['gps_sim/models/pr2_arm.urdf']),
    ],
    package_data={package_name: ['models/*.urdf']},
    include_package_data=True,
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='gps-ros2 developers',
    maintainer_email='dev@gps-ros2.invalid',
    description='Embedded MuJoCo PR2-like 7-DOF arm, task scenes, gymnasium env, and a node speaking ros2_control topics.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'gps_sim = gps_sim.sim_node:main',
            'gps_tf = gps_sim.tf_publisher:main',
        ],
    },
)
